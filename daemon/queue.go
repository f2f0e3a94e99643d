//go:build linux

package daemon

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// queue is a client's queue: an engine queue and the packet-mode pipe its
// records are copied into.
//
// One goroutine per queue (pump) moves records: it blocks in the engine's
// Queue.Read for records, then writes each as one packet to the pipe,
// parking in the runtime's poller while the pipe is full. A record taken
// from the engine is held by the pump until written, so none is lost
// between the two; while the pump is parked, new records wait in the engine
// queue (sized by the client), which loses the overflow and reports it
// with a loss record, as a full notification pipe does. The pump never
// holds a lock another client needs, so a slow client stalls nobody else.
type queue struct {
	id   uint32        // immutable
	c    *conn         // immutable
	q    *watchq.Queue // immutable
	w    *os.File      // the pipe's write end, non-blocking; immutable
	done chan struct{} // closed when pump returns

	written atomic.Uint64 // records written to the pipe
}

// newQueue creates the pipe for wq and starts its pump. It returns the
// read end for the caller to pass to the client and close.
func newQueue(c *conn, id uint32, wq *watchq.Queue) (*queue, int, error) {
	var p [2]int
	// O_DIRECT: packet mode, one record per read(). The read end stays
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
	// of them; past the per-user pipe limits the kernel may refuse, and
	// the default 16 slots then serve.
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, c.s.cfg.PipeSlots*os.Getpagesize()); err != nil {
		c.log.Debug("F_SETPIPE_SZ", "err", err)
	}
	q := &queue{id: id, c: c, q: wq, w: os.NewFile(uintptr(p[1]), fmt.Sprintf("watchq-queue-%d", id)), done: make(chan struct{})}
	go q.pump()
	return q, p[0], nil
}

// pump copies records from the engine queue into the pipe until either
// side closes.
func (q *queue) pump() {
	defer close(q.done)
	buf := make([]byte, 4096)
	for {
		n, err := q.q.Read(context.Background(), buf)
		if err != nil {
			return // closed
		}
		for rec := range record.Records(buf[:n]) {
			// The engine's reads return only whole, valid records.
			if _, err := q.w.Write(rec); err != nil {
				// EPIPE: the client closed its read end, which
				// releases the queue as closing a notification
				// pipe would. os.ErrClosed: close is under way.
				q.q.Close()
				return
			}
			q.written.Add(1)
		}
	}
}

// close closes the engine queue (its watches go without removal records)
// and the pipe's write end, and waits for the pump.
func (q *queue) close() {
	q.q.Close()
	q.w.Close()
	<-q.done
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
