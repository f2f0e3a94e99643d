package devtest

import (
	"fmt"
	"os"
	"path/filepath"
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
func LockHost() (release func()) {
	fd, err := unix.Open(LockPath, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o666)
	if err != nil {
		fmt.Fprintf(os.Stderr, "devtest: %s: %v (running without the host lock)\n", LockPath, err)
		return func() {}
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "devtest: flock %s: %v (running without the host lock)\n", LockPath, err)
	}
	return func() { unix.Close(fd) }
}

// Main is a TestMain for packages that need nothing else: it runs m
// holding the host lock and exits with its status.
func Main(m *testing.M) {
	release := LockHost()
	code := m.Run()
	release()
	os.Exit(code)
}
