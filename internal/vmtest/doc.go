// Package vmtest is watchq's real-kernel test harness. The machines watchq
// is developed on lack CONFIG_WATCH_QUEUE and USB, so tests that need them run
// inside a qemu guest booting a small kernel built from Debian's linux-source
// package with the fragment kernel.config:
//
//   - build-kernel builds (or finds in its cache) that kernel;
//   - cmd/run builds every package's *_vmtest_test.go tests (build tag
//     "vmtest") as static binaries, boots them with cmd/init as PID 1 and
//     exits with their status; `make vmtest` runs it;
//   - package guest is what guest tests import to ask the host to hot-plug
//     devices at the right moment and to read uevents.
//
// This package's own guest tests (proof_vmtest_test.go) are the harness's
// acceptance tests. docs/testing.md explains how to write more.
package vmtest
