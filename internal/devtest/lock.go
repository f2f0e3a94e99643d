package devtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// LockPath is the file whose exclusive flock serialises test binaries that
// touch the machine's loop devices or uevents.
var LockPath = filepath.Join(os.TempDir(), "watchq-devtest.lock")

// LockHost takes an exclusive lock shared by every test binary that
// creates, attaches or detaches loop devices, writes synthetic uevents or
// traces block errors, and returns its release. go test runs packages in
// parallel, and every uevent listener and block-error tracer sees every
// other package's devices: loop numbers are reused (LOOP_CTL_GET_FREE),
// storms on loop0 reach everyone, and an error traced on /dev/loopN just
// before another test attaches loopN would be taken for that test's.
// Call it from TestMain around m.Run.
//
// In a fuzz worker (a test binary started by `go test -fuzz` with
// -test.fuzzworker) LockHost takes nothing and returns a no-op: the
// coordinator that started the worker is the same package's test binary
// and may hold the lock already, so the worker would wait for it forever
// (and the fuzz target would run zero times). A fuzz worker runs only the
// fuzz target, and fuzz targets must not touch the host's devices.
func LockHost() (release func()) { return lockHost(LockPath, os.Args[1:]) }

// isFuzzWorker reports whether args, a test binary's arguments, make it
// a fuzz worker: cmd/go's coordinator starts each worker with
// -test.fuzzworker ahead of its own arguments (internal/fuzz).
func isFuzzWorker(args []string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == "test.fuzzworker" || a == "test.fuzzworker=true" {
			return true
		}
	}
	return false
}

func lockHost(path string, args []string) (release func()) {
	if isFuzzWorker(args) {
		return func() {}
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o666)
	if err != nil {
		fmt.Fprintf(os.Stderr, "devtest: %s: %v (running without the host lock)\n", path, err)
		return func() {}
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "devtest: flock %s: %v (running without the host lock)\n", path, err)
	}
	return func() { unix.Close(fd) }
}

// Main is a TestMain for packages that need nothing else: it runs m
// holding the host lock (none in a fuzz worker, see LockHost) and exits
// with its status.
func Main(m *testing.M) {
	release := LockHost()
	code := m.Run()
	release()
	os.Exit(code)
}
