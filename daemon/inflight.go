//go:build linux

package daemon

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// inflight is a pipe queue's watchq.Holder: it tells the engine queue
// which of the records its pump wrote to the pipe the client has read, so
// that the engine queue counts every record the client has not read
// against the capacity the client asked for, as one notification pipe
// does (hold.go in package watchq). Without it the pipe would hold
// PipeSlots packets on top of the engine queue's notes, and a storm would
// lose later, and in other places, than the kernel does.
//
// The pump records each packet as it writes it; Consumed asks the kernel
// how many bytes the pipe still holds (FIONREAD on the write end; an
// O_DIRECT pipe's reader takes whole packets, so they are a suffix of what
// was written) and pops the packets read before them.
type inflight struct {
	q *queue // immutable
	reclaimPoll

	// mu guards below and serializes the pump's write(2) with Consumed's
	// FIONREAD, so that the list and the pipe always agree. Lock order:
	// the engine queue's lock (Consumed's caller), then mu.
	mu sync.Mutex
	// pkts are the packets written and not yet known read, oldest
	// first; bytes is their total length.
	pkts  []inflightPacket
	bytes int

	// The packet send is writing and write's error, for writeFd, the
	// function RawConn.Write calls: made once, since a closure per packet
	// would allocate. The pump's goroutine only.
	wp      []byte
	werr    error
	writeFd func(fd uintptr) bool
}

// newInflight returns q's empty inflight list.
func newInflight(q *queue) *inflight {
	f := &inflight{q: q, reclaimPoll: reclaimPoll{q: q}}
	f.writeFd = func(fd uintptr) bool {
		_, f.werr = f.write(int(fd), f.wp)
		return f.werr != unix.EAGAIN
	}
	return f
}

// send writes packet p through rc (the pipe's write end), as write does,
// parking in the runtime's poller while the pipe is full, until the write
// deadline close sets.
func (f *inflight) send(rc syscall.RawConn, p []byte) error {
	f.wp = p
	err := rc.Write(f.writeFd)
	f.wp = nil
	if err == nil {
		err = f.werr
	}
	return err
}

// inflightPacket is one packet in the pipe: its length and how many
// records (not loss records, which take no note) it carries.
type inflightPacket struct{ bytes, records int }

// Reclaim polling while a loss waits behind records the client has not
// read (reclaimPoll): the first check after reclaimFirst, then twice as
// long each time up to reclaimMax.
const (
	reclaimFirst = 100 * time.Microsecond
	reclaimMax   = 10 * time.Millisecond
)

// write writes packet p, whole records from the engine queue, to the pipe
// without waiting; once written, p is in flight and its records count as
// the queue's written. It returns the records in p that took a note (not
// loss records) and write(2)'s error (EAGAIN: no room).
func (f *inflight) write(fd int, p []byte) (notes int, err error) {
	all, notes := countRecords(p)
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if _, err = unix.Write(fd, p); err != unix.EINTR {
			break
		}
	}
	if err == nil {
		f.pkts = append(f.pkts, inflightPacket{len(p), notes})
		f.bytes += len(p)
		f.q.written.Add(uint64(all))
	}
	return notes, err
}

// Consumed reports the records of the packets the client has read since
// the last call. The engine queue calls it with its lock held.
func (f *inflight) Consumed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bytes == 0 {
		return 0
	}
	unread, err := unix.IoctlGetInt(f.q.wfd, unix.TIOCINQ) // FIONREAD
	if err != nil {
		return 0 // the pipe is being closed: nothing is read any more
	}
	n, i := 0, 0
	for ; i < len(f.pkts) && f.bytes > unread; i++ {
		f.bytes -= f.pkts[i].bytes
		n += f.pkts[i].records
	}
	f.pkts = append(f.pkts[:0], f.pkts[i:]...)
	return n
}

// reclaimPoll is the LossWaiting half of the daemon's Holders (inflight
// for pipes, ringHold for rings): while a loss waits behind records the
// client has not read, it calls the engine queue's Reclaim on a timer.
// Nothing else says when a client has caught up, so the timer is the
// latency of a loss record that no later record brings.
type reclaimPoll struct {
	q       *queue      // immutable
	polling atomic.Bool // a reclaim timer runs
}

// LossWaiting starts the reclaim timer unless it runs.
func (f *reclaimPoll) LossWaiting() {
	if f.polling.CompareAndSwap(false, true) {
		f.poll(reclaimFirst)
	}
}

// poll calls Reclaim after d, and again, less and less often, while a
// loss still waits and the queue is open.
func (f *reclaimPoll) poll(d time.Duration) {
	time.AfterFunc(d, func() {
		if f.q.ctx.Err() == nil && f.q.q.Reclaim() {
			f.poll(min(2*d, reclaimMax))
			return
		}
		f.polling.Store(false)
		// A loss that began to wait between Reclaim and the Store found
		// the timer running and left it to this one.
		if f.q.ctx.Err() == nil && f.q.q.Reclaim() && f.polling.CompareAndSwap(false, true) {
			f.poll(reclaimFirst)
		}
	})
}
