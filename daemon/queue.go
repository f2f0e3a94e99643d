//go:build linux

package daemon

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

// pumpBuf is the pump's read buffer: eight records of the largest size.
const pumpBuf = 8 * record.NoteSize

// queue is a client's queue: an engine queue and the packet-mode pipe its
// records are copied into.
//
// One goroutine per queue (pump) moves records: it blocks in the engine's
// Queue.Read for records, then writes them to the pipe, parking in the
// runtime's poller while the pipe is full. A plain reader (no read size
// declared: protocol version 1, a read(2) program) gets one record per
// packet. A reader that declared its read(2) buffer (CreateQueue.ReadSize)
// gets packed packets: each holds what one engine Read with a buffer of
// that size (at most protocol.MaxPacket) returns, which is what a
// notification pipe's read(2) with that buffer returns, loss records in
// the same places. An O_DIRECT pipe truncates a packet longer than the
// reader's buffer silently, so no packet is ever longer than declared. A
// record taken from the engine is held by the pump until written, so none
// is lost between the two, and it keeps its note in the engine queue until
// the client has read it from the pipe (inflight.go, the queue's Holder):
// the engine queue, sized by the client, counts every record the client
// has not read, loses the overflow and reports it with a loss record
// exactly where one notification pipe of that size would. The pump never
// holds a lock another client needs, so a slow client stalls nobody else.
//
// A second goroutine (watchReader) parks in the runtime's poller on the
// write end for EPOLLERR, which the kernel raises when the last read end
// closes: the queue is then released at once, as closing a notification
// pipe releases it, even if no record is ever written. Both goroutines
// cost a few KiB of stack and no thread.
//
// When the queue closes, the pump first writes what the engine queue still
// holds into the pipe, without waiting: a kernel notification pipe keeps
// what was posted readable until its reader closes. Records for which the
// pipe has no room are counted as lost (Server.Stats CloseLost).
type queue struct {
	id  uint32        // immutable
	c   *conn         // immutable
	q   *watchq.Queue // immutable
	w   *os.File      // the pipe's write end, non-blocking; immutable
	wfd int           // w's descriptor, for the final non-blocking writes; valid until w is closed
	// packet is the most bytes of whole records the pump packs into one
	// packet: min(the reader's declared read size, protocol.MaxPacket),
	// or 0 for a plain reader, one record per packet; immutable.
	packet int
	// rg is a ring queue's shared-memory ring (ring_linux.go), nil for a
	// pipe queue; w is then nil and ringPump is the pump. Immutable.
	rg *ring
	// fl is a pipe queue's list of packets in the pipe, the engine
	// queue's Holder (inflight.go); nil for a ring queue. Immutable.
	fl *inflight
	// rh is a ring queue's Holder (ringhold_linux.go); nil for a pipe
	// queue. Immutable.
	rh *ringHold

	ctx       context.Context // the pump's: cancelled by close
	cancel    context.CancelFunc
	pumpDone  chan struct{} // closed when pump returns
	watchDone chan struct{} // closed when watchReader returns

	mu sync.Mutex // guards below
	// closed is set by close; charges can no longer be added.
	closed bool
	// pages and watches are charged to the owner's uid for this queue;
	// close gives them back.
	pages, watches int

	written atomic.Uint64 // records written to the pipe
}

// newQueue creates the pipe for wq, whose creation charged pages to c's
// uid; packet is queue.packet. It returns the read end for the caller to pass to the client and
// close; start starts the queue's goroutines.
func newQueue(c *conn, id uint32, wq *watchq.Queue, pages, packet int) (*queue, int, error) {
	var p [2]int
	// O_DIRECT: packet mode, one packet per read(). The read end stays
	// blocking: it is the client's, for plain read() consumers.
	if err := unix.Pipe2(p[:], unix.O_DIRECT|unix.O_CLOEXEC); err != nil {
		return nil, -1, &watchq.Errno{Errno: err.(unix.Errno), Reason: fmt.Sprintf("pipe2: %v", err)}
	}
	if err := unix.SetNonblock(p[1], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, -1, &watchq.Errno{Errno: err.(unix.Errno), Reason: fmt.Sprintf("pipe: %v", err)}
	}
	// Each packet takes a whole pipe buffer (a page). Ask for PipeSlots
	// of them (charged to the uid already); past the per-user pipe
	// limits the kernel may refuse, and the default 16 slots then serve.
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, c.s.cfg.PipeSlots*os.Getpagesize()); err != nil {
		c.log.Debug("F_SETPIPE_SZ", "err", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &queue{id: id, c: c, q: wq, w: os.NewFile(uintptr(p[1]), fmt.Sprintf("watchq-queue-%d", id)), wfd: p[1], packet: packet,
		ctx: ctx, cancel: cancel, pumpDone: make(chan struct{}), watchDone: make(chan struct{}), pages: pages}
	q.fl = newInflight(q)
	wq.Hold(q.fl)
	return q, p[0], nil
}

// start starts the pump and the reader watch.
func (q *queue) start() {
	q.c.s.wg.Add(2)
	go func() {
		defer q.c.s.wg.Done()
		defer close(q.pumpDone)
		q.pump()
	}()
	go func() {
		defer q.c.s.wg.Done()
		defer close(q.watchDone)
		if q.watchReader() {
			q.c.release(q)
		}
	}()
}

// pump copies records from the engine queue into the pipe until close
// stops it, then flushes. It returns early, without flushing, when the
// pipe's reader is gone (EPIPE): watchReader then releases the queue.
//
// It drains what the engine queue holds before it parks: take returns at
// once while records are queued, so a busy queue costs one engine read
// per batch, and one write(2) per packet.
func (q *queue) pump() {
	buf := make([]byte, max(pumpBuf, q.packet))
	rc, err := q.w.SyscallConn()
	if err != nil {
		q.flush(nil, buf)
		return
	}
	for {
		n, err := q.take(buf, true)
		if err != nil {
			break // close under way
		}
		off := 0
		for p := range q.packets(buf[:n]) {
			if err := q.fl.send(rc, p); err != nil {
				if errors.Is(err, syscall.EPIPE) {
					return
				}
				// os.ErrDeadlineExceeded: close under way.
				q.flush(buf[off:n], buf)
				return
			}
			off += len(p)
		}
	}
	q.flush(nil, buf)
}

// countRecords counts the records in p, whole records an engine read
// returned: all of them, and those that took a note (not loss records).
func countRecords(p []byte) (all, notes int) {
	for r, err := range record.Records(p) {
		if err == nil {
			all++
			if !r.IsLoss() {
				notes++
			}
		}
	}
	return all, notes
}

// take reads the next batch of records from the engine queue into buf:
// for a packing queue, what a notification pipe's read(2) with the
// reader's declared buffer returns (pipe_read in kernel/watch_queue.c's
// pipe: as many whole records as fit, a pending loss record first);
// otherwise up to pumpBuf bytes of records, each a packet of its own.
// With wait it blocks until a record is queued or close begins (the
// engine's Read); without, it returns ErrWouldBlock on an empty queue.
func (q *queue) take(buf []byte, wait bool) (int, error) {
	size := pumpBuf
	if q.packet > 0 {
		size = q.packet
	}
	var n int
	var err error
	if wait {
		n, err = q.q.Read(q.ctx, buf[:size])
	} else {
		n, err = q.q.TryRead(buf[:size])
	}
	if err != watchq.ErrBufferTooSmall {
		return n, err
	}
	// A record longer than the reader declared: the kernel's read(2)
	// would fail with ENOBUFS, which a pipe cannot say. It goes alone,
	// in a packet the reader's read(2) truncates, as for a plain reader
	// with too small a buffer. It is queued now, and the pump is the
	// queue's only reader, so Next returns it at once, even on a
	// cancelled context.
	rec, err := q.q.Next(q.ctx)
	if err != nil {
		return 0, err
	}
	return copy(buf, rec), nil
}

// packets splits b, records taken by take, into the packets the pipe
// gets: b whole for a packing queue (take bounded it to the reader's
// buffer and MaxPacket, so the pipe keeps it as one packet), else one
// record each.
func (q *queue) packets(b []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		if q.packet > 0 {
			if len(b) > 0 {
				yield(b)
			}
			return
		}
		for rec, err := range record.Records(b) {
			if err != nil || !yield(rec) {
				return
			}
		}
	}
}

// flush writes pending records, then whatever the engine queue still
// holds, to the pipe without waiting for room; what does not fit is
// counted as lost. buf is scratch space.
func (q *queue) flush(pending, buf []byte) {
	q.q.Unhold() // what is left goes out as it is; a waiting loss record with it
	lost := uint64(0)
	broken := false
	write := func(recs []byte) {
		for p := range q.packets(recs) {
			if broken {
				return
			}
			notes, err := q.fl.write(q.wfd, p)
			switch {
			case err == unix.EPIPE:
				broken = true // nobody is left to read or to lose anything
			case err != nil: // EAGAIN: the pipe is full
				lost += uint64(notes)
			}
		}
	}
	write(pending)
	// Only what was queued when the flush began: records posted since
	// race with the close, and a steady publisher must not keep it going.
	left := q.q.Stats().Queued
	for !broken && left > 0 {
		n, err := q.take(buf, false)
		if err != nil {
			break
		}
		_, notes := countRecords(buf[:n])
		left -= notes
		write(buf[:n])
	}
	if lost > 0 {
		q.c.s.closeLost.Add(lost)
		q.c.log.Debug("queue closed with its pipe full", "queue", q.id, "lost", lost)
	}
}

// watchReader waits, in the runtime's poller, for the pipe's read end to
// be closed (EPOLLERR on the write end), and reports whether it was;
// false when the write end is closed first.
func (q *queue) watchReader() bool {
	rc, err := q.w.SyscallConn()
	if err != nil {
		return false
	}
	// The write end is never readable: the poller reports it 'r'-ready
	// only for EPOLLERR (or EPOLLHUP). RawConn.Read calls the function
	// first, so a reader gone before the wait is seen too, and again
	// after each wake-up.
	rc.Read(func(fd uintptr) bool { return readerGone(int(fd)) })
	// Read also returns (with an error) when w is being closed, or after
	// an EPOLLERR-only event, which the runtime reports as an error:
	// look again.
	gone := false
	if rc.Control(func(fd uintptr) { gone = readerGone(int(fd)) }) != nil {
		return false
	}
	return gone
}

// readerGone reports whether the pipe whose write end is fd has no reader
// left (poll(2) says POLLERR).
func readerGone(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd)}}
	for {
		n, err := unix.Poll(pfd, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && pfd[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
	}
}

// hold adds pages and watches, already charged to the owner's uid, to
// what close gives back. It reports false, adding nothing, if the queue
// is closed: the caller then uncharges them itself.
func (q *queue) hold(pages, watches int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.pages += pages
	q.watches += watches
	return true
}

// reclaimDead gives back the charge of q's watches that the engine has
// removed by itself: q holds the charge of every watch added through it,
// the engine queue counts those still delivering into it, and the
// difference is dead (conn.reclaimDeadWatches).
func (q *queue) reclaimDead() {
	live := q.q.Stats().Watches
	q.mu.Lock()
	dead := q.watches - live
	q.mu.Unlock()
	if dead > 0 {
		q.unhold(0, dead)
	}
}

// unhold gives back pages and watches held for the queue (a request that
// failed, a watch removed), unless close has given them back already.
func (q *queue) unhold(pages, watches int) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.pages -= pages
	q.watches -= watches
	q.mu.Unlock()
	q.c.s.uncharge(q.c, 0, pages, watches)
}

// close stops the pump, which writes what the engine queue still holds to
// the pipe as far as it has room; then closes the engine queue (its
// watches go without removal records) and the pipe's write end, and gives
// the queue's charges back. The caller has taken q out of its
// connection's map, so close runs once. fromWatcher is set when
// watchReader's goroutine calls it (it must not wait for itself).
func (q *queue) close(fromWatcher bool) {
	q.mu.Lock()
	q.closed = true
	pages, watches := q.pages, q.watches
	q.pages, q.watches = 0, 0
	q.mu.Unlock()

	q.cancel() // wakes a pump blocked on the engine queue
	if q.rg != nil {
		q.stopRing() // and one parked waiting for space
		<-q.pumpDone
		q.q.Close()
		q.closeRing()
		q.c.s.uncharge(q.c, 1, pages, watches)
		return
	}
	q.w.SetWriteDeadline(time.Unix(1, 0)) // and one parked on a full pipe
	<-q.pumpDone
	q.q.Close()
	q.w.Close() // wakes watchReader; returns once it has let go of w
	if !fromWatcher {
		<-q.watchDone
	}
	q.c.s.uncharge(q.c, 1, pages, watches)
}

// stats reports the queue for a Stats reply.
func (q *queue) stats() protocol.QueueStats {
	s := q.q.Stats()
	return protocol.QueueStats{
		Queue: q.id, PID: q.c.cred.PID, UID: q.c.cred.UID,
		Capacity: uint32(s.Capacity), Queued: uint32(s.Queued), Watches: uint32(s.Watches),
		Posted: s.Posted, Lost: s.Lost, Filtered: s.Filtered, Denied: s.Denied,
		Written: q.written.Load(),
	}
}
