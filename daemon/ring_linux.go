//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/internal/shmring"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// ring is a queue's shared-memory delivery (create-ring): the daemon's
// writable mapping of the data memfd, its mapping of the consumer's
// index memfd, and two eventfds. docs/protocol.md "Shared-memory ring" is
// the layout; package shmring the protocol.
//
// The queue's pump moves records from the engine queue into the ring,
// reading from the engine no more than the ring has room for; a record in
// the ring keeps its note until the consumer's tail passes it (ringHold),
// so when the queue is full the engine loses the overflow and reports it
// with a loss record exactly where one notification pipe of the client's
// size would (watchq's readLocked, fs/pipe.c pipe_read). The
// producer, Post, never waits for the consumer; only the pump does, for
// space, and only for its own client.
type ring struct {
	p     *shmring.Producer // pump's goroutine only, then close's
	mem   []byte            // the data memfd's mapping; unmapped by close
	idx   []byte            // the index memfd's mapping; unmapped by close
	wake  int               // eventfd written while the consumer sleeps; non-blocking; closed by close
	space *os.File          // eventfd the consumer writes while the pump waits for space; immutable
}

// errnoOf wraps a failed system call's errno for the reply.
func errnoOf(op string, err error) error {
	var e unix.Errno
	if !errors.As(err, &e) {
		e = unix.EIO
	}
	return &watchq.Errno{Errno: e, Reason: fmt.Sprintf("%s: %v", op, err)}
}

// newRing makes a ring of pages data pages. It returns the ring and the
// descriptors to pass to the client (protocol.RingData..RingSpace), which
// the caller closes after sending.
//
// The data memfd is mapped writable here first, then sealed with
// F_SEAL_FUTURE_WRITE (no write(2), no new writable mapping, no hole
// punching: the client can only map it PROT_READ) and, like the index
// memfd, with F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL: a client that could
// truncate either file would make the daemon's next access to its mapping
// a SIGBUS.
func newRing(pages uint32) (rg *ring, fds []int, err error) {
	size := shmring.HeaderSize + int(pages)*shmring.PageSize
	var open []int
	defer func() {
		if err != nil {
			for _, fd := range open {
				unix.Close(fd)
			}
			rg.unmap()
		}
	}()
	rg = &ring{wake: -1}
	memfd := func(name string, n int, seals int) (int, []byte, error) {
		fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			return -1, nil, errnoOf("memfd_create", err)
		}
		open = append(open, fd)
		if err := unix.Ftruncate(fd, int64(n)); err != nil {
			return -1, nil, errnoOf("ftruncate", err)
		}
		m, err := unix.Mmap(fd, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return -1, nil, errnoOf("mmap", err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			unix.Munmap(m)
			return -1, nil, errnoOf("F_ADD_SEALS", err)
		}
		return fd, m, nil
	}
	const fixedSize = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	dfd, mem, err := memfd("watchq-ring", size, fixedSize|unix.F_SEAL_FUTURE_WRITE)
	if err != nil {
		return rg, nil, err
	}
	rg.mem = mem
	ifd, idx, err := memfd("watchq-ring-index", shmring.IndexSize, fixedSize)
	if err != nil {
		return rg, nil, err
	}
	rg.idx = idx
	if rg.p, err = shmring.NewProducer(mem, idx, pages); err != nil {
		return rg, nil, &watchq.Errno{Errno: unix.EINVAL, Reason: err.Error()}
	}
	efd := func() (int, error) {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return -1, errnoOf("eventfd", err)
		}
		open = append(open, fd)
		return fd, nil
	}
	wfd, err := efd()
	if err != nil {
		return rg, nil, err
	}
	sfd, err := efd()
	if err != nil {
		return rg, nil, err
	}
	// The daemon keeps its own descriptions of the eventfds (dup), so
	// that closing what it sent leaves them open.
	if rg.wake, err = unix.FcntlInt(uintptr(wfd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		rg.wake = -1
		return rg, nil, errnoOf("dup", err)
	}
	own, err := unix.FcntlInt(uintptr(sfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(rg.wake)
		rg.wake = -1
		return rg, nil, errnoOf("dup", err)
	}
	rg.space = os.NewFile(uintptr(own), "watchq-ring-space") // non-blocking: the runtime's poller waits on it
	fds = make([]int, protocol.RingFDs)
	fds[protocol.RingData], fds[protocol.RingIndex], fds[protocol.RingWake], fds[protocol.RingSpace] = dfd, ifd, wfd, sfd
	return rg, fds, nil
}

func (rg *ring) unmap() {
	if rg == nil {
		return
	}
	if rg.mem != nil {
		unix.Munmap(rg.mem)
		rg.mem = nil
	}
	if rg.idx != nil {
		unix.Munmap(rg.idx)
		rg.idx = nil
	}
}

// kick writes the wake eventfd. EAGAIN (the counter at its maximum, a
// consumer that never reads it) is ignored: the counter is non-zero, so a
// consumer that blocks wakes at once.
func (rg *ring) kick() {
	var one = [8]byte{1}
	unix.Write(rg.wake, one[:])
}

// waitSpace blocks until the consumer's tail moves from tail, or ctx
// ends, or close sets a deadline on the space eventfd. The waiting
// flag is set before looking again, so a consumer that moves its tail in
// between sees it and writes the eventfd (see shmring's memory ordering).
func (rg *ring) waitSpace(ctx context.Context, tail uint64) {
	rg.p.SetWaiting(true)
	defer rg.p.SetWaiting(false)
	rc, err := rg.space.SyscallConn()
	if err != nil {
		return
	}
	var buf [8]byte
	rc.Read(func(fd uintptr) bool {
		if rg.p.Tail() != tail || ctx.Err() != nil {
			return true
		}
		_, err := unix.Read(int(fd), buf[:]) // drain; EAGAIN parks in the poller
		return err != unix.EAGAIN
	})
}

// ringPumpBuf is the most a ring queue's pump takes from the engine
// queue in one read: 4096 bytes, 170 records of 24 bytes (pumpBuf would
// take 42), so that a busy queue costs one engine read, one ring copy and
// at most one wake-up per 170 such records. Short enough that the engine
// queue's lock, which its posters need, is held for one page's copy.
const ringPumpBuf = 4096

// ringPump is the pump of a ring queue: queue.pump's counterpart. It
// returns when close cancels q.ctx, after flushing.
func (q *queue) ringPump() {
	rg := q.rg
	buf := make([]byte, ringPumpBuf)
	for q.ctx.Err() == nil {
		free, tail := rg.p.Free()
		var n int
		var err error
		if free > 0 {
			n, err = q.q.Read(q.ctx, buf[:min(free, len(buf))])
		}
		if free == 0 || err == watchq.ErrBufferTooSmall {
			// Until the consumer moves its tail past the one free
			// was computed from.
			rg.waitSpace(q.ctx, tail)
			continue
		}
		if err != nil {
			break // close under way (ctx)
		}
		q.put(buf[:n])
	}
	q.ringFlush(buf)
}

// put publishes recs, whole records, and wakes the consumer if it sleeps.
func (q *queue) put(recs []byte) {
	all, notes := countRecords(recs)
	q.rh.add(q.rg.p.Head()+uint64(len(recs)), notes)
	if q.rg.p.Put(recs) {
		q.rg.kick()
	}
	q.written.Add(uint64(all))
}

// ringFlush puts what the engine queue still holds into the ring as far
// as it has room, without waiting, then marks the ring closed and wakes
// the consumer: it reads what is there, then end of file. Records that do
// not fit are counted as lost (Server.Stats CloseLost), as flush does for
// a pipe.
func (q *queue) ringFlush(buf []byte) {
	q.q.Unhold() // what is left goes out as it is; a waiting loss record with it
	lost := uint64(0)
	left := q.q.Stats().Queued
	for left > 0 {
		free, _ := q.rg.p.Free()
		n, err := q.q.TryRead(buf[:min(free, len(buf))])
		if err == watchq.ErrBufferTooSmall || (err == nil && n == 0) {
			// No room: the rest is lost.
			for left > 0 {
				if n, err := q.q.TryRead(buf); err == nil {
					_, notes := countRecords(buf[:n])
					lost += uint64(notes)
					left -= notes
					continue
				}
				break
			}
			break
		}
		if err != nil {
			break
		}
		_, notes := countRecords(buf[:n])
		left -= notes
		q.put(buf[:n])
	}
	q.rg.p.Close()
	q.rg.kick()
	if lost > 0 {
		q.c.s.closeLost.Add(lost)
		q.c.log.Debug("ring queue closed with its ring full", "queue", q.id, "lost", lost)
	}
}

// closeRing releases the ring once the pump is done: the consumer keeps
// its own mappings and descriptors.
func (q *queue) closeRing() {
	q.rg.space.Close()
	unix.Close(q.rg.wake)
	q.rg.unmap()
}

// createRing creates a queue delivered through a shared-memory ring. The
// uid is charged for the engine queue's pages and the ring's (header,
// index and data pages) before anything is allocated.
func (c *conn) createRing(r protocol.CreateRing) ([]byte, []int, error) {
	if r.Size > record.MaxNotes {
		return nil, nil, errNotes(r.Size)
	}
	if c.numQueues() >= c.s.cfg.MaxQueues {
		return nil, nil, &watchq.Errno{Errno: unix.EMFILE, Reason: fmt.Sprintf("this connection holds %d queues, the limit", c.s.cfg.MaxQueues)}
	}
	pages := 2 + int(r.Pages) + pagesFor(int(r.Size))
	if err := c.s.chargeQueue(c, pages); err != nil {
		return nil, nil, err
	}
	wq := watchq.NewQueue()
	capacity := 0
	fail := func(err error) ([]byte, []int, error) {
		wq.Close()
		c.s.uncharge(c, 1, pages, 0)
		return nil, nil, err
	}
	if r.Size != 0 {
		var err error
		if capacity, err = wq.SetSize(int(r.Size)); err != nil {
			return fail(err)
		}
	}
	rg, fds, err := newRing(r.Pages)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &queue{id: c.s.nextQueue.Add(1), c: c, q: wq, rg: rg, wfd: -1,
		ctx: ctx, cancel: cancel, pumpDone: make(chan struct{}), watchDone: make(chan struct{}), pages: pages}
	close(q.watchDone) // no reader to watch: the connection's end releases the queue
	q.rh = &ringHold{reclaimPoll: reclaimPoll{q: q}, p: rg.p}
	wq.Hold(q.rh)
	c.mu.Lock()
	c.queues[q.id] = q
	c.mu.Unlock()
	q.c.s.wg.Add(1)
	go func() {
		defer q.c.s.wg.Done()
		defer close(q.pumpDone)
		q.ringPump()
	}()
	b, _ := protocol.RingReply{Queue: q.id, Capacity: uint32(capacity), Pages: r.Pages}.AppendBinary(nil)
	return b, fds, nil
}

// stopRing wakes a pump parked waiting for space; close calls it with
// q.cancel.
func (q *queue) stopRing() { q.rg.space.SetReadDeadline(time.Unix(1, 0)) }
