//go:build linux

package kernel

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// ONotificationPipe is O_NOTIFICATION_PIPE, which <linux/watch_queue.h>
// defines as O_EXCL (0x80 on amd64 and arm64, different elsewhere).
const ONotificationPipe = unix.O_EXCL

// Pipe is one kernel notification pipe (a struct watch_queue): the read end,
// served by the runtime poller, and the write end, kept open so that an
// empty queue blocks instead of reading EOF (fs/pipe.c:pipe_read) and used
// for the ioctls and KEYCTL_WATCH_KEY.
//
// The methods are safe for concurrent use; Read may run concurrently with
// the others.
type Pipe struct {
	r *os.File // read end, non-blocking, registered with the poller

	mu  sync.RWMutex // guards wfd against Close
	wfd int          // write end; -1 once closed. Guarded by mu.
}

// Open creates a notification pipe (fs/pipe.c:do_pipe2 with
// O_NOTIFICATION_PIPE, then kernel/watch_queue.c:watch_queue_init). flags may
// add unix.O_DIRECT; O_CLOEXEC and O_NONBLOCK are always set. Until SetSize
// is called every record posted to the pipe is lost.
func Open(flags int) (*Pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], flags|ONotificationPipe|unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, notSupported(err)
	}
	return &Pipe{r: os.NewFile(uintptr(fds[0]), "watch_queue"), wfd: fds[1]}, nil
}

// Fd is the descriptor to pass as queue_fd to KEYCTL_WATCH_KEY (the write
// end; both ends share one watch_queue). It stays valid until Close.
func (p *Pipe) Fd() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.wfd
}

// withFd runs fn with the write end, or returns os.ErrClosed.
func (p *Pipe) withFd(fn func(fd int) error) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.wfd < 0 {
		return os.ErrClosed
	}
	return fn(p.wfd)
}

// SetSize sets the queue's capacity in notes (1..512); the kernel rounds it
// up to whole pages of 32 notes. It can be called once: EBUSY afterwards.
// Corresponds to kernel/watch_queue.c:watch_queue_set_size.
func (p *Pipe) SetSize(notes int) error {
	return p.withFd(func(fd int) error {
		if err := unix.IoctlSetInt(fd, IocWatchQueueSetSize, notes); err != nil {
			return &OpError{Op: "ioctl(IOC_WATCH_QUEUE_SET_SIZE)", Err: err}
		}
		return nil
	})
}

// SetFilter installs f, or removes the filter when f is nil. Corresponds
// to kernel/watch_queue.c:watch_queue_set_filter.
func (p *Pipe) SetFilter(f *record.Filter) error {
	if f == nil {
		return p.SetRawFilter(nil)
	}
	b, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	return p.SetRawFilter(b)
}

// SetRawFilter installs an encoded struct watch_notification_filter, left
// for the kernel to judge (only its length is checked, so that the kernel
// never reads past b), or removes the filter when b is nil.
func (p *Pipe) SetRawFilter(b []byte) error {
	if b != nil {
		if err := checkFilterBytes(b); err != nil {
			return err
		}
	}
	return p.withFd(func(fd int) error {
		var ptr unsafe.Pointer
		if b != nil {
			ptr = unsafe.Pointer(&b[0])
		}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), IocWatchQueueSetFilter, uintptr(ptr))
		if e != 0 {
			return &OpError{Op: "ioctl(IOC_WATCH_QUEUE_SET_FILTER)", Err: e}
		}
		return nil
	})
}

// WatchKey watches key (a serial or a special id such as
// unix.KEY_SPEC_SESSION_KEYRING) with tag, under the calling thread's
// credentials: the key must grant View (EACCES otherwise). A second watch on
// the same key gives EBUSY. Corresponds to
// security/keys/keyctl.c:keyctl_watch_key.
func (p *Pipe) WatchKey(key int32, tag record.Tag) error {
	return p.keyctlWatch(key, int(tag))
}

// UnwatchKey removes the pipe's watch on key; the kernel posts a 16-byte
// removal record. EBADSLT if there is no such watch.
func (p *Pipe) UnwatchKey(key int32) error {
	return p.keyctlWatch(key, record.RemoveWatch)
}

func (p *Pipe) keyctlWatch(key int32, tag int) error {
	return p.withFd(func(fd int) error {
		if _, err := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, int(key), fd, tag, 0); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				return &NotSupportedError{Op: "keyctl(KEYCTL_WATCH_KEY)", Missing: MissingKeyNotifications, Errno: unix.EOPNOTSUPP}
			}
			return &OpError{Op: "keyctl(KEYCTL_WATCH_KEY)", Key: key, Err: err}
		}
		return nil
	})
}

// Read reads as many whole records as fit in b, blocking until at least one
// is queued. A buffer too small for the next record gives ENOBUFS. A pending
// loss record (8 bytes) is returned without blocking, as pipe_read does.
// After Close, Read returns os.ErrClosed.
func (p *Pipe) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = &OpError{Op: "read", Err: pe.Err}
		}
	}
	return n, err
}

// SetReadDeadline sets a deadline for Read, as os.File.SetReadDeadline.
func (p *Pipe) SetReadDeadline(t time.Time) error { return p.r.SetReadDeadline(t) }

// SyscallConn returns the read end's raw connection, for callers that
// drive reads themselves through the runtime poller (RawConn.Read).
func (p *Pipe) SyscallConn() (syscall.RawConn, error) { return p.r.SyscallConn() }

// Queued returns the number of bytes of records queued (FIONREAD), as
// keyutils' watch_sync polls it.
func (p *Pipe) Queued() (int, error) {
	var n int
	err := p.withFd(func(fd int) error {
		v, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
		if err != nil {
			return &OpError{Op: "ioctl(FIONREAD)", Err: err}
		}
		n = v
		return nil
	})
	return n, err
}

// Close closes both ends. The last close clears every watch the pipe holds
// without posting removal records (kernel/watch_queue.c:watch_queue_clear).
// A blocked Read returns os.ErrClosed, as every other method does from
// then on; later calls of Close do nothing and return nil.
func (p *Pipe) Close() error {
	p.mu.Lock()
	fd := p.wfd
	p.wfd = -1
	p.mu.Unlock()
	if fd < 0 {
		return nil
	}
	// Close the read end first so a blocked Read wakes with os.ErrClosed
	// rather than seeing EOF when the last writer goes.
	rerr := p.r.Close()
	if err := unix.Close(fd); err != nil {
		return &OpError{Op: "close", Err: err}
	}
	return rerr
}
