package keys

import "fmt"

// Error is a failed keyctl operation of the source, with the key it was
// about. It unwraps to the errno.
type Error struct {
	Op  string // the operation or system call
	Key int32  // the key id or serial
	Err error  // the cause, usually a syscall.Errno
}

func (e *Error) Error() string { return fmt.Sprintf("keys: %s %d: %v", e.Op, e.Key, e.Err) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }
