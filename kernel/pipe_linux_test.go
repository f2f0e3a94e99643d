//go:build linux

package kernel

import (
	"errors"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProbe checks that Probe agrees with Open and says why on kernels
// without the facility (like the development VM: ENOPKG).
func TestProbe(t *testing.T) {
	err := Probe()
	p, oerr := Open(0)
	if oerr == nil {
		defer p.Close()
	}
	if err == nil {
		if oerr != nil {
			t.Fatalf("Probe() = nil but Open: %v", oerr)
		}
		return
	}
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Probe() = %v, not ErrNotSupported", err)
	}
	var nse *NotSupportedError
	if !errors.As(err, &nse) || nse.Missing == 0 {
		t.Fatalf("Probe() = %#v, want a *NotSupportedError with a reason", err)
	}
	t.Logf("Probe: %v", err)
	switch nse.Missing {
	case MissingWatchQueue:
		if !errors.Is(err, syscall.ENOPKG) || !errors.Is(oerr, syscall.ENOPKG) {
			t.Errorf("MissingWatchQueue without ENOPKG: probe %v, open %v", err, oerr)
		}
	case MissingKeyNotifications:
		if oerr != nil {
			t.Errorf("pipes missing but reason %v", nse.Missing)
		}
		if err := p.WatchKey(unix.KEY_SPEC_PROCESS_KEYRING, 1); !errors.Is(err, ErrNotSupported) {
			t.Errorf("WatchKey on a kernel without key notifications: %v", err)
		}
	}
}

func TestNotSupportedError(t *testing.T) {
	err := error(&NotSupportedError{Op: "pipe2(O_NOTIFICATION_PIPE)", Missing: MissingWatchQueue, Errno: unix.ENOPKG})
	if !errors.Is(err, ErrNotSupported) || !errors.Is(err, unix.ENOPKG) {
		t.Errorf("%v does not match ErrNotSupported and ENOPKG", err)
	}
	if got, want := err.Error(), "kernel: notifications not supported: kernel built without CONFIG_WATCH_QUEUE (pipe2(O_NOTIFICATION_PIPE): package not installed)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	for errno, want := range map[error]Missing{unix.ENOPKG: MissingWatchQueue, unix.EINVAL: MissingNotificationPipes} {
		var nse *NotSupportedError
		if !errors.As(notSupported(errno), &nse) || nse.Missing != want {
			t.Errorf("notSupported(%v) = %v, want %v", errno, nse, want)
		}
	}
	if errors.Is(notSupported(unix.EMFILE), ErrNotSupported) {
		t.Error("EMFILE reported as not supported")
	}
}
