package watchq

import (
	"fmt"
	"os"
	"syscall"
)

// Errors. Each wraps the errno the kernel returns in the same situation, so
// errors.Is(err, syscall.ENOBUFS) and errors.Is(err, ErrBufferTooSmall) both
// hold.
var (
	// ErrBufferTooSmall: the next record does not fit in the read buffer
	// (pipe_read's -ENOBUFS). Nothing was consumed.
	ErrBufferTooSmall = &Errno{syscall.ENOBUFS, "read buffer too small for the next record"}
	// ErrClosed: the queue, source or client was closed. Blocked readers
	// wake with it. It is watchq's one "closed" error: every package
	// returns it (or, for kernel.Pipe, os.ErrClosed), and it matches
	// os.ErrClosed under errors.Is, so errors.Is(err, os.ErrClosed) holds
	// on every path.
	ErrClosed = &Errno{syscall.EBADF, "closed"}
	// ErrWouldBlock: a non-blocking read found the queue empty (EAGAIN).
	ErrWouldBlock = &Errno{syscall.EAGAIN, "queue empty"}
	// ErrSizeSet: the queue size was already set (watch_queue_set_size's
	// -EBUSY).
	ErrSizeSet = &Errno{syscall.EBUSY, "queue size already set"}
	// ErrWatchExists: the queue already watches that object
	// (add_watch_to_object's -EBUSY).
	ErrWatchExists = &Errno{syscall.EBUSY, "queue already watches this object"}
	// ErrNoWatch: no such watch to remove (remove_watch_from_object's
	// -EBADSLT).
	ErrNoWatch = &Errno{ebadslt, "no such watch"}
	// ErrTooManyWatches: the watcher's user holds its limit of watches
	// (add_watch_to_object's -EAGAIN).
	ErrTooManyWatches = &Errno{syscall.EAGAIN, "too many watches for this user"}
	// ErrQueueDead: the queue was closed before the watch could be added
	// (add_watch_to_object's -ENOENT).
	ErrQueueDead = &Errno{syscall.ENOENT, "queue is closed"}
	// ErrListDead: the watched object was destroyed.
	ErrListDead = &Errno{syscall.ENOENT, "watched object is gone"}
)

// sentinels are the engine's errors a reply from another process (watchqd)
// can carry, as an errno and the sentinel's Reason.
var sentinels = [...]*Errno{
	ErrBufferTooSmall, ErrClosed, ErrWouldBlock, ErrSizeSet, ErrWatchExists,
	ErrNoWatch, ErrTooManyWatches, ErrQueueDead, ErrListDead,
}

// Sentinel returns the engine sentinel with this errno and reason, or nil.
// It is how an error that crossed a process boundary as an errno and its
// text (a watchqd reply, see protocol.ErrnoOf) matches the same sentinel
// again under errors.Is.
func Sentinel(errno syscall.Errno, reason string) error {
	for _, s := range sentinels {
		if s.Errno == errno && s.Reason == reason {
			return s
		}
	}
	return nil
}

// Errno is an error with the errno the kernel gives for the same condition.
type Errno struct {
	Errno  syscall.Errno // the kernel's errno
	Reason string        // what went wrong, for people
}

func (e *Errno) Error() string { return "watchq: " + e.Reason }

// Unwrap returns the errno, so errors.Is(err, syscall.EXXX) works.
func (e *Errno) Unwrap() error { return e.Errno }

// Is makes ErrClosed match os.ErrClosed. Sentinels otherwise match by
// identity (errors.Is's ==), and the errno through Unwrap, so
// errors.Is(err, ErrWatchExists) and errors.Is(err, syscall.EBUSY) both
// hold for a duplicate watch.
func (e *Errno) Is(target error) bool { return e == ErrClosed && target == os.ErrClosed }

// errInval builds an EINVAL error with a reason.
func errInval(format string, args ...any) error {
	return &Errno{syscall.EINVAL, fmt.Sprintf(format, args...)}
}
