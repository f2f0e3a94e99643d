package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"reflect"
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
	c  *Client         // immutable
	id uint32          // immutable
	f  *os.File        // the pipe's read end; nil for a ring queue; immutable
	rc syscall.RawConn // f's, for reads in the runtime's poller; immutable
	// readFn is q.readOnce as a func value, made once so that a read
	// allocates nothing; immutable.
	readFn func(fd uintptr) bool
	// rg is a ring queue's reader (ring_linux.go), nil for a pipe queue;
	// its fields are guarded by rmu.
	rg *ringReader

	mu       sync.Mutex // guards capacity
	capacity int

	// closed is set by Close, before the pipe is closed, so that reads
	// report ErrClosed (a RawConn read of a closed file reports
	// internal/poll's "use of closed file", which matches nothing).
	closed atomic.Bool

	// readSize is the read size the queue was created with
	// (protocol.CreateQueue.ReadSize): 0 for one record per packet;
	// immutable.
	readSize int

	// rmu serialises readers and guards pending, scratch, rn and rerr.
	rmu sync.Mutex
	// pending is what is left of the last packet read from the pipe, in
	// scratch: records that did not fit the caller's buffer. The pipe is
	// packet-mode, so a packet cannot be left in it half-read.
	pending []byte
	// scratch receives packets: protocol.MaxPacket bytes, the most the
	// daemon packs, so no packet is ever truncated.
	scratch [protocol.MaxPacket]byte
	// rn and rerr are readOnce's results, for readPacket.
	rn   int
	rerr error

	// dmu guards the context f's read deadline follows: ctx, set by a
	// reader (under rmu), its AfterFunc's stop, and gen, which tells an
	// AfterFunc of a context no longer followed to do nothing.
	dmu  sync.Mutex
	ctx  context.Context
	stop func() bool
	gen  uint64
}

func newQueue(c *Client, id uint32, capacity int, f *os.File, readSize int) (*Queue, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("watchq client: %w", err)
	}
	q := &Queue{c: c, id: id, capacity: capacity, f: f, rc: rc, readSize: readSize}
	q.readFn = q.readOnce
	return q, nil
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
// written for the kernel's notification pipes: on a queue created with
// ReadSize(0) it reads one whole record per read(2); otherwise each read
// needs a buffer of the declared read size, or the pipe truncates the
// packet silently. It sees end of file when the daemon closes the queue.
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
	q.dmu.Lock()
	if q.stop != nil {
		q.stop() // f's deadline no longer follows a reader's context
	}
	q.gen++
	q.dmu.Unlock()
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

// readPacket blocks (until ctx ends) for the next packet and makes it
// q.pending: one record from a plain queue, whole records back to back
// from a packing one. A packet that is not whole, valid records is an
// error (*record.RecordError).
//
// Preconditions: q.rmu is held and q.pending is empty.
func (q *Queue) readPacket(ctx context.Context) error {
	if q.closed.Load() {
		return watchq.ErrClosed
	}
	q.follow(ctx)
	// One read(2) per packet when one is waiting; on an empty pipe the
	// runtime's poller parks the goroutine until the daemon writes.
	err := q.rc.Read(q.readFn)
	n, rerr := q.rn, q.rerr
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if q.closed.Load() || errors.Is(err, os.ErrClosed) {
			return watchq.ErrClosed
		}
		return err
	case rerr != nil:
		return fmt.Errorf("watchq client: read queue %d: %w", q.id, rerr)
	case n == 0:
		// The daemon closed the write end: at our request (Close, or
		// Client.Close, both set their flag first), or because it went
		// away.
		if q.closed.Load() || q.c.closed.Load() {
			return watchq.ErrClosed
		}
		return fmt.Errorf("watchq client: read queue %d: %w", q.id, ErrDaemonGone)
	}
	recs := 0
	for _, err := range record.Records(q.scratch[:n]) {
		if err != nil {
			return err
		}
		recs++
	}
	if recs > 1 && q.readSize == 0 {
		return &record.RecordError{Reason: fmt.Sprintf("packet of %d bytes holds %d records on a queue created for one record per packet", n, recs)}
	}
	q.pending = q.scratch[:n]
	return nil
}

// readOnce is readPacket's read(2), called by the runtime's poller; it
// asks to be parked on EAGAIN.
//
// Preconditions: q.rmu is held.
func (q *Queue) readOnce(fd uintptr) bool {
	for {
		q.rn, q.rerr = unix.Read(int(fd), q.scratch[:])
		if q.rerr != unix.EINTR {
			return q.rerr != unix.EAGAIN
		}
	}
}

// follow makes f's read deadline follow ctx: ctx's deadline, and one in
// the past once ctx ends, so that a blocked read returns. A reader
// passing the same context read after read (the usual loop) costs
// nothing after the first: the deadline and the AfterFunc stay.
//
// Preconditions: q.rmu is held.
func (q *Queue) follow(ctx context.Context) {
	// A context of an uncomparable type would panic in ==; such a
	// context is followed afresh each time.
	if reflect.TypeOf(ctx).Comparable() && ctx == q.ctx {
		return
	}
	q.dmu.Lock()
	defer q.dmu.Unlock()
	if q.stop != nil {
		q.stop()
	}
	q.gen++
	gen := q.gen
	q.ctx = ctx
	if d, ok := ctx.Deadline(); ok {
		q.f.SetReadDeadline(d)
	} else {
		q.f.SetReadDeadline(time.Time{})
	}
	q.stop = context.AfterFunc(ctx, func() {
		q.dmu.Lock()
		defer q.dmu.Unlock()
		if q.gen == gen {
			q.f.SetReadDeadline(time.Unix(1, 0))
		}
	})
}

// Read blocks until at least one record has arrived, then copies as many
// whole records into buf as fit from the packet the daemon wrote, like
// read(2) on a notification pipe with a buffer of the queue's declared
// read size: a packet holds what the kernel's read would return. One
// read(2) of the pipe per packet, and none while records of the last
// packet are left. It returns watchq.ErrBufferTooSmall (ENOBUFS) if the
// next record does not fit in buf (the record is kept for the next read),
// ctx.Err() when ctx ends, and, once every record has been read,
// watchq.ErrClosed if this program closed the queue or its Client, or an
// error matching ErrDaemonGone if the daemon went away. An empty buf
// returns 0 at once, as read(2) of 0 bytes does.
func (q *Queue) Read(ctx context.Context, buf []byte) (int, error) {
	if len(buf) == 0 {
		return 0, nil
	}
	q.rmu.Lock()
	defer q.rmu.Unlock()
	if q.rg != nil {
		return q.ringRead(ctx, buf, false)
	}
	if len(q.pending) == 0 {
		if err := q.readPacket(ctx); err != nil {
			return 0, err
		}
	}
	off := 0
	for len(q.pending) > 0 {
		// readPacket checked every record of the packet.
		n := record.HeaderAt(q.pending).Len()
		if n > len(buf)-off {
			break
		}
		off += copy(buf[off:], q.pending[:n])
		q.pending = q.pending[n:]
	}
	if off == 0 {
		return 0, watchq.ErrBufferTooSmall
	}
	return off, nil
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
	if len(q.pending) == 0 {
		if err := q.readPacket(ctx); err != nil {
			return nil, err
		}
	}
	n := record.HeaderAt(q.pending).Len()
	rec := record.Record(append([]byte(nil), q.pending[:n]...))
	q.pending = q.pending[n:]
	return rec, nil
}

// Records iterates over the queue's records, blocking for each, until ctx
// ends or the queue is closed; the final error (ctx.Err(),
// watchq.ErrClosed, or one matching ErrDaemonGone) is yielded once with a
// nil record.
func (q *Queue) Records(ctx context.Context) iter.Seq2[record.Record, error] {
	return record.Each(ctx, q)
}
