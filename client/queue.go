package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// Sources is the set of device record classes a device watch delivers
// under the daemon's policy (protocol.SourceUSB, SourceBlockErrors,
// SourceBlockLifecycle).
type Sources = protocol.Sources

// Device record classes, for the Sources WatchDevices returns.
const (
	SourceUSB            = protocol.SourceUSB
	SourceBlockErrors    = protocol.SourceBlockErrors
	SourceBlockLifecycle = protocol.SourceBlockLifecycle
)

// Queue is a queue in the daemon and the pipe its records arrive on.
// Control methods talk to the daemon; Read, Next and Records read the
// pipe. One goroutine at a time may read.
type Queue struct {
	c  *Client  // immutable
	id uint32   // immutable
	f  *os.File // the pipe's read end; nil for a ring queue; immutable
	// rg is a ring queue's reader (ring_linux.go), nil for a pipe queue;
	// its fields are guarded by rmu.
	rg *ringReader

	mu       sync.Mutex // guards capacity
	capacity int

	// closed is set by Close, before the pipe is closed, so that reads
	// report ErrClosed (a RawConn read of a closed file reports
	// internal/poll's "use of closed file", which matches nothing).
	closed atomic.Bool

	// rmu serialises readers and guards pending.
	rmu sync.Mutex
	// pending holds a record read from the pipe that did not fit the
	// caller's buffer: the pipe is packet-mode, so a record cannot be
	// left in it half-read.
	pending []byte
	scratch [record.NoteSize]byte
}

// ID returns the daemon's id for the queue (unique in the daemon).
func (q *Queue) ID() uint32 { return q.id }

// File returns the pipe's read end, in non-blocking mode (the runtime's
// poller reads it); nil for a ring queue (CreateRingQueue). Reading it directly while also using Read loses
// records to whichever reader gets them. To hand the pipe to another
// program, use OpenFile.
func (q *Queue) File() *os.File { return q.f }

// OpenFile opens the queue's pipe again for reading, as a new open file
// description in blocking mode (through /proc/self/fd), for a program
// written for the kernel's notification pipes: it reads one whole record
// per read(2) and sees end of file when the daemon closes the queue.
func (q *Queue) OpenFile() (*os.File, error) {
	// Not q.f.Fd(): it would put q.f in blocking mode.
	rc, err := q.f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("watchq client: reopen queue %d: %w", q.id, err)
	}
	var f *os.File
	cerr := rc.Control(func(fd uintptr) {
		f, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY|syscall.O_CLOEXEC, 0)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("watchq client: reopen queue %d: %w", q.id, err)
	}
	return f, nil
}

// Capacity returns the queue's capacity in notes, 0 while unsized.
func (q *Queue) Capacity() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.capacity
}

// SetSize sizes the queue to hold at least notes records and returns the
// capacity (IOC_WATCH_QUEUE_SET_SIZE): 1..512 or EINVAL, once or EBUSY.
func (q *Queue) SetSize(ctx context.Context, notes int) (int, error) {
	if notes < 0 || notes > 1<<31-1 {
		notes = 0 // let the daemon say EINVAL
	}
	body, _, err := q.c.do(ctx, protocol.SetSize{Queue: q.id, Notes: uint32(notes)})
	if err != nil {
		return 0, err
	}
	r, err := protocol.ParseQueueReply(body)
	if err != nil {
		return 0, err
	}
	q.mu.Lock()
	q.capacity = int(r.Capacity)
	q.mu.Unlock()
	return int(r.Capacity), nil
}

// SetFilter installs f, or removes the filter when f is nil
// (IOC_WATCH_QUEUE_SET_FILTER).
func (q *Queue) SetFilter(ctx context.Context, f *record.Filter) error {
	var b []byte
	if f != nil {
		var err error
		if b, err = f.MarshalBinary(); err != nil {
			return err
		}
	}
	return q.SetRawFilter(ctx, b)
}

// SetRawFilter installs the kernel's binary struct
// watch_notification_filter; the daemon validates it as the kernel does
// (EINVAL). An empty b removes the filter.
func (q *Queue) SetRawFilter(ctx context.Context, b []byte) error {
	_, _, err := q.c.do(ctx, protocol.SetFilter{Queue: q.id, Filter: b})
	return err
}

// WatchDevices is watch_devices(2) with a tag: it watches the global
// device list, delivering records stamped with tag. It returns the classes
// of device records the policy lets through to this client; a client
// granted none is refused with EACCES. EBUSY: already watching; ENODEV:
// the daemon runs without its device source.
func (q *Queue) WatchDevices(ctx context.Context, tag record.Tag) (Sources, error) {
	body, _, err := q.c.do(ctx, protocol.WatchDevices{Queue: q.id, Tag: record.TagArg(tag)})
	if err != nil {
		return 0, err
	}
	r, err := protocol.ParseWatchReply(body)
	return r.Sources, err
}

// UnwatchDevices is watch_devices(2) with tag -1: it removes the watch on
// the device list; an 8-byte removal record follows. EBADSLT: no watch.
func (q *Queue) UnwatchDevices(ctx context.Context) error {
	_, _, err := q.c.do(ctx, protocol.WatchDevices{Queue: q.id, Tag: record.RemoveWatch})
	return err
}

// WatchPublisher watches publisher type typ (record.Type.IsPublisher) with
// tag.
func (q *Queue) WatchPublisher(ctx context.Context, typ record.Type, tag record.Tag) error {
	_, _, err := q.c.do(ctx, protocol.WatchPublisher{Queue: q.id, Type: uint32(typ), Tag: record.TagArg(tag)})
	return err
}

// UnwatchPublisher removes the watch on publisher type typ; a 16-byte
// removal record carrying typ follows. EBADSLT: no watch.
func (q *Queue) UnwatchPublisher(ctx context.Context, typ record.Type) error {
	_, _, err := q.c.do(ctx, protocol.WatchPublisher{Queue: q.id, Type: uint32(typ), Tag: record.RemoveWatch})
	return err
}

// Stats returns the daemon's counters for this queue.
func (q *Queue) Stats(ctx context.Context) (QueueStats, error) {
	s, err := q.c.Stats(ctx)
	if err != nil {
		return QueueStats{}, err
	}
	for _, e := range s.Entries {
		if e.Queue == q.id {
			return e, nil
		}
	}
	return QueueStats{}, &Error{Op: protocol.OpStats.String(), Errno: syscall.ENOENT, Reason: "queue not found"}
}

// Close asks the daemon to close the queue and closes the pipe; later
// calls do nothing and return nil. Closing
// the Client closes every queue in the daemon too.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := q.c.do(ctx, protocol.CloseQueue{Queue: q.id})
	if q.rg != nil {
		q.rg.wakeClose() // wakes a blocked reader, which lets go of rmu
		q.rmu.Lock()
		q.rg.close()
		q.rmu.Unlock()
	} else if cerr := q.f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, ErrDaemonGone) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EBADF) {
		err = nil
	}
	return err
}

// readPacket reads one packet into q.scratch. With wait it blocks (until
// ctx ends); without, it returns ErrWouldBlock on an empty pipe.
//
// Preconditions: q.rmu is held.
func (q *Queue) readPacket(ctx context.Context, wait bool) ([]byte, error) {
	rc, err := q.f.SyscallConn()
	if err != nil || q.closed.Load() {
		return nil, watchq.ErrClosed
	}
	if wait {
		defer followContext(ctx, q.f.SetReadDeadline)()
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), q.scratch[:])
			if rerr != unix.EINTR {
				break
			}
		}
		return !(wait && rerr == unix.EAGAIN)
	})
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if q.closed.Load() || errors.Is(err, os.ErrClosed) {
			return nil, watchq.ErrClosed
		}
		return nil, err
	case rerr == unix.EAGAIN:
		return nil, watchq.ErrWouldBlock
	case rerr != nil:
		return nil, fmt.Errorf("watchq client: read queue %d: %w", q.id, rerr)
	case n == 0:
		// The daemon closed the write end: at our request (Close, or
		// Client.Close, both set their flag first), or because it went
		// away.
		if q.closed.Load() || q.c.closed.Load() {
			return nil, watchq.ErrClosed
		}
		return nil, fmt.Errorf("watchq client: read queue %d: %w", q.id, ErrDaemonGone)
	}
	rec, err := record.ParseRecord(q.scratch[:n])
	if err != nil {
		return nil, err
	}
	if len(rec) != n {
		return nil, &record.RecordError{Reason: fmt.Sprintf("packet of %d bytes holds a %d-byte record", n, len(rec))}
	}
	return rec, nil
}

// Read blocks until at least one record has arrived, then packs as many
// whole records into buf as are available and fit, like read(2) on a
// notification pipe. It returns watchq.ErrBufferTooSmall (ENOBUFS) if the
// next record does not fit in buf (the record is kept for the next read),
// ctx.Err() when ctx ends, and, once every record has been read,
// watchq.ErrClosed if this program closed the queue or its Client, or an
// error matching ErrDaemonGone if the daemon went away.
func (q *Queue) Read(ctx context.Context, buf []byte) (int, error) {
	q.rmu.Lock()
	defer q.rmu.Unlock()
	if q.rg != nil {
		return q.ringRead(ctx, buf, false)
	}
	off := 0
	for {
		var rec []byte
		if q.pending != nil {
			rec = q.pending
		} else {
			var err error
			rec, err = q.readPacket(ctx, off == 0)
			if err == watchq.ErrWouldBlock && off > 0 {
				return off, nil
			}
			if err != nil {
				if off > 0 {
					return off, nil
				}
				return 0, err
			}
		}
		if len(rec) > len(buf)-off {
			if q.pending == nil {
				q.pending = append(make([]byte, 0, record.NoteSize), rec...)
			}
			if off == 0 {
				return 0, watchq.ErrBufferTooSmall
			}
			return off, nil
		}
		off += copy(buf[off:], rec)
		q.pending = nil
		if len(buf)-off < record.HeaderSize {
			return off, nil
		}
	}
}

// Next blocks for the next record and returns a copy of it. Its errors
// are Read's.
func (q *Queue) Next(ctx context.Context) (record.Record, error) {
	q.rmu.Lock()
	defer q.rmu.Unlock()
	if q.rg != nil {
		n, err := q.ringRead(ctx, q.scratch[:], true)
		if err != nil {
			return nil, err
		}
		return record.Record(append([]byte(nil), q.scratch[:n]...)), nil
	}
	if p := q.pending; p != nil {
		q.pending = nil
		return record.Record(p), nil
	}
	rec, err := q.readPacket(ctx, true)
	if err != nil {
		return nil, err
	}
	return record.Record(append([]byte(nil), rec...)), nil
}

// Records iterates over the queue's records, blocking for each, until ctx
// ends or the queue is closed; the final error (ctx.Err(),
// watchq.ErrClosed, or one matching ErrDaemonGone) is yielded once with a
// nil record.
func (q *Queue) Records(ctx context.Context) iter.Seq2[record.Record, error] {
	return record.Each(ctx, q)
}
