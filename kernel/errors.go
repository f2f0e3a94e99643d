package kernel

import (
	"errors"
	"runtime"
	"strconv"
	"syscall"
)

// ErrNotSupported matches, under errors.Is, every error that says the
// running kernel lacks the notification facility, and every error the
// module's packages return off Linux for what exists only there (a
// *NotSupportedError with Missing MissingLinux): watchq's one "not
// supported" sentinel. (The device source's BPF tracers report what the
// kernel cannot run with cilium/ebpf's ebpf.ErrNotSupported, as ebpf's
// own errors do.)
var ErrNotSupported = errors.New("kernel notification queue not supported")

// Missing names the piece of the facility a kernel lacks.
type Missing uint8

// What a kernel can lack.
const (
	MissingKeys              Missing = iota + 1 // CONFIG_KEYS: no keyctl(2) (ENOSYS)
	MissingWatchQueue                           // CONFIG_WATCH_QUEUE: pipe2 O_NOTIFICATION_PIPE gives ENOPKG
	MissingNotificationPipes                    // kernel older than 5.8: O_NOTIFICATION_PIPE gives EINVAL
	MissingKeyNotifications                     // CONFIG_KEY_NOTIFICATIONS: KEYCTL_WATCH_KEY gives EOPNOTSUPP
	MissingLinux                                // not Linux: the facility exists only there; Op names what was asked for
)

// String describes what is missing.
func (m Missing) String() string {
	switch m {
	case MissingKeys:
		return "kernel built without CONFIG_KEYS"
	case MissingWatchQueue:
		return "kernel built without CONFIG_WATCH_QUEUE"
	case MissingNotificationPipes:
		return "kernel older than 5.8 (no notification pipes)"
	case MissingKeyNotifications:
		return "kernel built without CONFIG_KEY_NOTIFICATIONS"
	case MissingLinux:
		return "not Linux"
	}
	return "unknown"
}

// NotSupportedError says why the kernel facility is unavailable. It matches
// ErrNotSupported and unwraps to the errno the kernel returned.
type NotSupportedError struct {
	Op      string        // the call that told us, e.g. "pipe2(O_NOTIFICATION_PIPE)"
	Missing Missing       // what is missing
	Errno   syscall.Errno // what the kernel returned; 0 if the call succeeded but reported no support
}

func (e *NotSupportedError) Error() string {
	if e.Missing == MissingLinux {
		// Every package's stubs off Linux say so with this error; Op
		// carries their own prefix ("device: uevents").
		return e.Op + ": not supported on " + runtime.GOOS + " (Linux only)"
	}
	s := "kernel: notifications not supported: " + e.Missing.String() + " (" + e.Op
	if e.Errno != 0 {
		s += ": " + e.Errno.Error()
	}
	return s + ")"
}

// Is makes errors.Is(err, ErrNotSupported) hold.
func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }

// Unwrap returns the errno, if any.
func (e *NotSupportedError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// OpError is a failed system call on a notification pipe, with context.
type OpError struct {
	Op  string // e.g. "keyctl(KEYCTL_WATCH_KEY)"
	Key int32  // key serial, for key operations; 0 otherwise
	Err error  // usually a syscall.Errno
}

func (e *OpError) Error() string {
	if e.Key != 0 {
		return "kernel: " + e.Op + " key " + strconv.Itoa(int(e.Key)) + ": " + e.Err.Error()
	}
	return "kernel: " + e.Op + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *OpError) Unwrap() error { return e.Err }
