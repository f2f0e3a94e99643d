//go:build linux

// Package devtest holds helpers the device tests share (source/device,
// daemon, cmd/watchq): private network namespaces, synthetic kernel
// uevents, loop devices, and FUSE files with a range that fails with EIO.
package devtest

import (
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/watchq/watchq/internal/testenv"
	"golang.org/x/sys/unix"
)

// NullUevent is the uevent file of /dev/null's device, present on every
// Linux system: a synthetic event written there comes from the kernel with
// SUBSYSTEM=mem.
const NullUevent = "/sys/devices/virtual/mem/null/uevent"

// NewNetNS creates a private network namespace and returns a file
// descriptor for it, closed when the test ends. The calling goroutine's
// thread is left in its original namespace.
func NewNetNS(tb testing.TB) int {
	tb.Helper()
	testenv.RequireRoot(tb)
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// unshare(2) changes only this thread. The thread is not unlocked
		// afterwards, so the runtime destroys it when the goroutine exits
		// and no other goroutine ever runs in the new namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{-1, fmt.Errorf("unshare(CLONE_NEWNET): %w", err)}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		ch <- result{fd, err}
	}()
	r := <-ch
	testenv.SkipIfUnsupported(tb, "private network namespace", r.err)
	tb.Cleanup(func() { unix.Close(r.fd) })
	return r.fd
}

// UUID returns a random RFC 4122 version 4 UUID, the form
// kobject_synth_uevent requires.
func UUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Synth writes a synthetic uevent, "ACTION UUID KEY=VALUE...", to a sysfs
// uevent file (lib/kobject_uevent.c kobject_synth_uevent). The kernel sends
// it with SYNTH_UUID=uuid and SYNTH_ARG_KEY=VALUE for each argument.
func Synth(uevent, action, uuid string, args ...string) error {
	msg := strings.Join(append([]string{action, uuid}, args...), " ")
	if err := os.WriteFile(uevent, []byte(msg), 0); err != nil {
		return fmt.Errorf("synthetic uevent %q to %s: %w", msg, uevent, err)
	}
	return nil
}
