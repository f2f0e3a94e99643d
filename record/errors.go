package record

import (
	"errors"
	"fmt"
	"syscall"
)

// RecordError reports a malformed record in a byte stream.
type RecordError struct {
	Offset int    // byte offset of the bad record in the input
	Reason string // what is wrong
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("watchq: malformed record at offset %d: %s", e.Offset, e.Reason)
}

// Unwrap returns EINVAL.
func (e *RecordError) Unwrap() error { return syscall.EINVAL }

// ErrMalformed matches every RecordError under errors.Is.
var ErrMalformed = errors.New("watchq: malformed record")

// Is makes errors.Is(err, ErrMalformed) hold for every RecordError.
func (e *RecordError) Is(target error) bool { return target == ErrMalformed }

// InvalidError is an argument the kernel would refuse with EINVAL: a
// filter watch_queue_set_filter rejects, a tag outside -1..255. It unwraps
// to syscall.EINVAL.
type InvalidError struct {
	Reason string // what is wrong
}

func (e *InvalidError) Error() string { return "watchq: " + e.Reason }

// Unwrap returns EINVAL.
func (e *InvalidError) Unwrap() error { return syscall.EINVAL }

// errInval builds an *InvalidError.
func errInval(format string, args ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, args...)}
}
