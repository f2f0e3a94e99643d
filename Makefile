# watchq Makefile. Each target belongs to the subsystem that added it; keep
# targets small and delegate to scripts or Go commands.

# run: the main job — watch notifications and print them.
.PHONY: run test setup bench
run:
	go run ./cmd/watchq watch

# test: install what the tests need (scripts/setup, root), then run them all
# (scripts/check). CI runs exactly this with WATCHQ_STRICT=1.
test: setup
	scripts/check

setup:
	scripts/setup

# bench: the engine benchmarks beside their channel baseline.
bench:
	go test -run '^$$' -bench 'Delivered|PostFiltered|Fanout' -benchmem -count 10 . | tee /tmp/watchq-bench.txt
	benchstat /tmp/watchq-bench.txt

# bench-fleet: the fleet path beside raw JetStream publishing, interleaved
# (docs/benchmarks.md, "Fleet").
.PHONY: bench-fleet
bench-fleet:
	go test -c -o /tmp/watchq-fleet.test ./fleet
	cd fleet && /tmp/watchq-fleet.test -test.run '^$$' -test.bench Fleet -test.benchtime 20000x -test.count 10 | tee /tmp/watchq-fleet-bench.txt
	benchstat /tmp/watchq-fleet-bench.txt

# vmtest: build (or reuse the cached) vmtest kernel, then run every
# *_vmtest_test.go guest test inside qemu (see docs/testing.md).
# Needs root for apt-get on a cache miss, and qemu-system-x86.
# VMTEST_FLAGS passes runner flags, e.g. VMTEST_FLAGS='-run USB -bin /usr/bin/keyctl'.
VMTEST_FLAGS ?= -v
.PHONY: vmtest
vmtest:
	go run ./internal/vmtest/cmd/run $(VMTEST_FLAGS) ./...
