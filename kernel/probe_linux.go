//go:build linux

package kernel

import (
	"errors"
	"sync"
	"unsafe"

	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// probed caches Probe's conclusive answer.
var probed struct {
	mu   sync.Mutex
	done bool  // an answer is cached. Guarded by mu.
	err  error // the cached answer: nil or a *NotSupportedError. Guarded by mu.
}

// Probe reports whether the running kernel supports notification pipes and
// key watches. It returns nil if it does, a *NotSupportedError (matching
// ErrNotSupported) saying what is missing if it does not, or another error
// (an *OpError, such as EMFILE) if the probe itself failed. Only conclusive
// answers, nil and *NotSupportedError, are cached; a failed probe is tried
// again on the next call.
func Probe() error {
	probed.mu.Lock()
	defer probed.mu.Unlock()
	if probed.done {
		return probed.err
	}
	err := probe()
	var ns *NotSupportedError
	if err == nil || errors.As(err, &ns) {
		probed.done, probed.err = true, err
	}
	return err
}

// probe mirrors what keyutils' `keyctl supports` and LTP's wqueue tests do:
// KEYCTL_CAPABILITIES (security/keys/keyctl.c:keyctl_capabilities), then a
// notification pipe (fs/pipe.c:do_pipe2 → watch_queue_init), then, only for
// kernels too old to report capabilities, KEYCTL_WATCH_KEY itself.
func probe() error {
	caps, err := capabilities()
	switch {
	case errors.Is(err, unix.ENOSYS):
		return &NotSupportedError{Op: "keyctl(KEYCTL_CAPABILITIES)", Missing: MissingKeys, Errno: unix.ENOSYS}
	case err == nil && caps[1]&capsNotifications == 0:
		// The bit is set iff CONFIG_KEY_NOTIFICATIONS, which needs
		// CONFIG_WATCH_QUEUE; ask pipe2 which is missing.
		if perr := probePipe(); perr != nil {
			return perr
		}
		return &NotSupportedError{Op: "keyctl(KEYCTL_CAPABILITIES) notifications bit", Missing: MissingKeyNotifications}
	}
	if perr := probePipe(); perr != nil {
		return perr
	}
	if err == nil {
		return nil
	}
	// Kernels before 5.3 have no KEYCTL_CAPABILITIES (EOPNOTSUPP); ask
	// KEYCTL_WATCH_KEY directly. Removing a watch that does not exist
	// gives EBADSLT (or a lookup error) when the facility is present.
	p, perr := Open(0)
	if perr != nil {
		return perr
	}
	defer p.Close()
	_, werr := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, unix.KEY_SPEC_PROCESS_KEYRING, p.wfd, record.RemoveWatch, 0)
	if errors.Is(werr, unix.EOPNOTSUPP) {
		return &NotSupportedError{Op: "keyctl(KEYCTL_WATCH_KEY)", Missing: MissingKeyNotifications, Errno: unix.EOPNOTSUPP}
	}
	return nil
}

// probePipe creates and closes a notification pipe.
func probePipe() error {
	var fds [2]int
	if err := unix.Pipe2(fds[:], ONotificationPipe|unix.O_CLOEXEC); err != nil {
		return notSupported(err)
	}
	unix.Close(fds[0])
	unix.Close(fds[1])
	return nil
}

// notSupported maps pipe2's errno to the reason, or returns it as is.
func notSupported(err error) error {
	const op = "pipe2(O_NOTIFICATION_PIPE)"
	switch {
	case errors.Is(err, unix.ENOPKG):
		return &NotSupportedError{Op: op, Missing: MissingWatchQueue, Errno: unix.ENOPKG}
	case errors.Is(err, unix.EINVAL):
		return &NotSupportedError{Op: op, Missing: MissingNotificationPipes, Errno: unix.EINVAL}
	}
	return &OpError{Op: op, Err: err}
}

// capabilities returns the KEYCTL_CAPABILITIES bytes. unix.KeyctlBuffer
// passes the buffer in the wrong arguments for this command, so call
// keyctl(2) directly: keyctl(KEYCTL_CAPABILITIES, buf, buflen).
func capabilities() ([2]byte, error) {
	var caps [2]byte
	_, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_CAPABILITIES, uintptr(unsafe.Pointer(&caps[0])), uintptr(len(caps)))
	if e != 0 {
		return caps, e
	}
	return caps, nil
}
