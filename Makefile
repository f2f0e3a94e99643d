# watchq Makefile. Each target belongs to the subsystem that added it; keep
# targets small and delegate to scripts or Go commands.

# vmtest: build (or reuse the cached) vmtest kernel, then run every
# *_vmtest_test.go guest test inside qemu (see docs/testing.md).
# Needs root for apt-get on a cache miss, and qemu-system-x86.
# VMTEST_FLAGS passes runner flags, e.g. VMTEST_FLAGS='-run USB -bin /usr/bin/keyctl'.
VMTEST_FLAGS ?= -v
.PHONY: vmtest
vmtest:
	go run ./vmtest/cmd/run $(VMTEST_FLAGS) ./...
