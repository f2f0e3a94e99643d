# watchq Makefile. Each target belongs to the subsystem that added it; keep
# targets small and delegate to scripts or Go commands.

# run: the main job — watch notifications and print them.
.PHONY: run test setup bench install
run:
	@echo "make run: building watchq (the first build takes a minute or two) ..." >&2
	go build -o bin/watchq ./cmd/watchq
	@echo "make run: bin/watchq watch (Ctrl-C stops it)" >&2
	bin/watchq watch

# install: both binaries, the systemd units (ExecStart pointing at the
# installed watchqd), the man pages, shell completion, the C header of the
# shared-memory ring reader (<watchq/ring.h>) and, unless one is
# there already, the shipped /etc/watchq/watchqd.conf. PREFIX and DESTDIR
# as usual; Debian packaging would use PREFIX=/usr.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
INCLUDEDIR ?= $(PREFIX)/include
install:
	go build -trimpath -o bin/watchq ./cmd/watchq
	go build -trimpath -o bin/watchqd ./cmd/watchqd
	install -D -m 0755 bin/watchq $(DESTDIR)$(BINDIR)/watchq
	install -D -m 0755 bin/watchqd $(DESTDIR)$(SBINDIR)/watchqd
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/sbin/watchqd|$(SBINDIR)/watchqd|g' -e 's|/etc/watchq/|$(SYSCONFDIR)/watchq/|g' systemd/watchqd.service >$(DESTDIR)$(UNITDIR)/watchqd.service
	install -m 0644 systemd/watchqd.socket $(DESTDIR)$(UNITDIR)/watchqd.socket
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -D -m 0644 completion/watchq.bash $(DESTDIR)$(BASHCOMPDIR)/watchq
	install -D -m 0644 completion/_watchq $(DESTDIR)$(ZSHCOMPDIR)/_watchq
	install -D -m 0644 completion/watchq.fish $(DESTDIR)$(FISHCOMPDIR)/watchq.fish
	install -D -m 0644 include/watchq/ring.h $(DESTDIR)$(INCLUDEDIR)/watchq/ring.h
	test -e $(DESTDIR)$(SYSCONFDIR)/watchq/watchqd.conf || install -D -m 0644 etc/watchqd.conf $(DESTDIR)$(SYSCONFDIR)/watchq/watchqd.conf

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
	scripts/bench-fleet

# vmtest: build (or reuse the cached) vmtest kernel, then run every
# *_vmtest_test.go guest test inside qemu (see docs/testing.md).
# Needs root for apt-get on a cache miss, and qemu-system-x86.
# VMTEST_FLAGS passes runner flags, e.g. VMTEST_FLAGS='-run USB -bin /usr/bin/keyctl'.
VMTEST_FLAGS ?= -v
.PHONY: vmtest
vmtest:
	go run ./internal/vmtest/cmd/run $(VMTEST_FLAGS) ./...
