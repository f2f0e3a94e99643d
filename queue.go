package watchq

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/watchq/watchq/record"
)

// note is one slot of a queue: the kernel's 128-byte slot of a
// notification page (WATCH_QUEUE_NOTE_SIZE; post_one_notification copies a
// record into one), and nothing else. The record's length is its own
// length field. A record is at most 127 bytes, so every slot has a free
// byte or more behind its record: the first two of them hold the count of
// records lost after it (the kernel's PIPE_BUF_FLAG_LOSS on the pipe
// buffer, with a count instead of a flag) once a later record is queued
// behind it; until then the count is Queue.newestLost. Two bytes hold any
// count a loss record can report (record.PutLoss saturates at 0xffff);
// the one byte behind a 127-byte record saturates at 0xff. The kernel
// keeps only a flag (its loss record says "some were lost"), so either
// saturation is within what it promises; Stats().Lost stays exact.
type note [record.NoteSize]byte

// size returns the length of the record in n.
func (n *note) size() int { return record.HeaderAt(n[:]).Len() }

// setLost stores c as the count of records lost after n's record,
// saturated at what its free bytes hold: 0xffff (as a loss record
// saturates it), or 0xff behind a 127-byte record.
func (n *note) setLost(c uint64) {
	l := n.size()
	c = min(c, maxLost(l))
	if l < record.NoteSize-1 {
		binary.LittleEndian.PutUint16(n[l:], uint16(c))
	} else {
		n[l] = byte(c)
	}
}

// maxLost is the largest count a note holding a record of l bytes keeps
// (note.setLost); the reader saturates the newest record's count, which
// is still in Queue.newestLost, the same way, so a count never depends on
// whether a record was queued behind it.
func maxLost(l int) uint64 {
	if l < record.NoteSize-1 {
		return 0xffff
	}
	return 0xff
}

// lost returns the count setLost stored; l is n.size().
func (n *note) lost(l int) uint64 {
	if l < record.NoteSize-1 {
		return uint64(binary.LittleEndian.Uint16(n[l:]))
	}
	return uint64(n[l])
}

// clearLost sets the count to zero; l is n.size().
func (n *note) clearLost(l int) {
	if l < record.NoteSize-1 {
		binary.LittleEndian.PutUint16(n[l:], 0)
	} else {
		n[l] = 0
	}
}

// Queue is a bounded notification queue: the engine's counterpart of a
// notification pipe (struct watch_queue plus its pipe ring). Watches on any
// number of objects deliver into it; one or more goroutines read it.
// Posting never blocks: a full queue drops the new record and reports the
// loss in-band.
type Queue struct {
	// maxNotes is the largest size SetSize accepts. Immutable.
	maxNotes int
	// wake carries one pending wake-up to a blocked reader. Immutable;
	// never closed.
	wake chan struct{}
	// done is closed by Close. Immutable.
	done chan struct{}

	// filter is the installed filter, or nil for none: stored under mu by
	// SetFilter, loaded without a lock by posters (the kernel reads
	// wqueue->filter under RCU).
	filter atomic.Pointer[record.Filter]
	// ready is the ReadySet told when the queue becomes readable, or nil:
	// stored by ReadySet.Add and Remove, loaded by notify and Close; no
	// lock.
	ready atomic.Pointer[ReadySet]
	// filtered and denied count records the filter or the policy kept
	// out: added to by posters without a lock.
	filtered, denied atomic.Uint64

	// mu guards everything below (the kernel's pipe->rd_wait.lock, taken by
	// post_one_notification and by pipe_read's tail updates), and the
	// watches' queue links (watch.onQueue, qprev, qnext). Lock order:
	// WatchList.mu before Queue.mu.
	mu sync.Mutex
	// notes is the ring; nil until SetSize. len(notes) is the capacity.
	notes []note
	// first indexes the oldest queued note; count is how many are queued.
	first, count int
	// lossPending is the number of lost records the reader must report
	// next, before any further record: the count of a flagged note the
	// reader has passed, or losses reported by PostLoss on an empty ring.
	lossPending uint64
	// newestLost counts the records lost after the newest queued note
	// (the last pipe buffer's PIPE_BUF_FLAG_LOSS): moved into that note's
	// slot when a record is queued behind it, or into lossPending when the
	// reader takes it. Zero while the ring is empty.
	newestLost uint64
	// closed is set by Close; posts to a closed queue are dropped (the
	// liveness check CVE-2022-1882 taught the kernel to make under the
	// lock the destroyer takes).
	closed bool
	// sized is set by the first SetSize.
	sized bool
	// readers counts goroutines blocked in Read/Next.
	readers int
	// watches heads the list of watches delivering into this queue
	// (wqueue->watches), linked through watch.qnext and qprev; nwatches
	// counts them. The comment on watch says who keeps which list.
	watches  *watch
	nwatches int
	// posted, lost and delivered count records queued, dropped for lack of
	// room (or lost upstream), and handed to readers.
	posted, lost, delivered uint64
	// holder, set by Hold, stands behind the reader (hold.go); nil for
	// none. held counts the records read since that it has not yet
	// reported consumed: their notes are still taken. heldLost counts the
	// records lost behind the newest held record, reported once the held
	// records are consumed or a record is queued behind them. heldSignal
	// says that heldLost began to count under this lock, for unlock to
	// tell the holder.
	holder     Holder
	held       int
	heldLost   uint64
	heldSignal bool
}

// QueueOption configures NewQueue.
type QueueOption func(*Queue)

// WithMaxNotes raises (or lowers) the largest size SetSize accepts from the
// kernel's 512. Ask for it explicitly when a consumer needs a deeper queue.
func WithMaxNotes(n int) QueueOption { return func(q *Queue) { q.maxNotes = n } }

// NewQueue returns an unsized queue. Until SetSize is called every record
// posted to it is lost, and no loss record can appear (as with a
// notification pipe before IOC_WATCH_QUEUE_SET_SIZE).
func NewQueue(opts ...QueueOption) *Queue {
	q := &Queue{maxNotes: record.MaxNotes, wake: make(chan struct{}, 1), done: make(chan struct{})}
	for _, o := range opts {
		o(q)
	}
	return q
}

// SetSize sizes the queue to hold at least notes records and returns the
// capacity. Like watch_queue_set_size it works once: a sized queue gives
// ErrSizeSet (EBUSY) whatever notes is, since the kernel checks that before
// the range. Otherwise notes must be 1..512 (or the WithMaxNotes limit),
// else EINVAL; the capacity is rounded up to whole pages of 32 notes, as
// mainline since 5.17 does (a request of 1 gives 32, 100 gives 128).
func (q *Queue) SetSize(notes int) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return 0, ErrClosed
	case q.sized:
		return 0, ErrSizeSet
	case notes < 1 || notes > q.maxNotes:
		return 0, errInval("queue size %d out of range 1..%d", notes, q.maxNotes)
	}
	capacity := (notes + record.NotesPerPage - 1) / record.NotesPerPage * record.NotesPerPage
	q.sized = true
	q.notes = make([]note, capacity) // under the lock, as the kernel sizes under pipe->mutex
	return capacity, nil
}

// SetFilter installs f, replacing any filter; nil removes it so every
// record passes. It may be called at any time, as
// IOC_WATCH_QUEUE_SET_FILTER may. Records already queued stay. A closed
// queue gives ErrClosed.
func (q *Queue) SetFilter(f *record.Filter) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	q.filter.Store(f)
	return nil
}

// Filter returns the installed filter, or nil.
func (q *Queue) Filter() *record.Filter { return q.filter.Load() }

// postLocked copies rec into a free note, or, when the queue is full, adds
// one to the loss count of the newest queued record and drops rec. It
// reports whether the queue went from unreadable to readable.
// Corresponds to kernel/watch_queue.c:post_one_notification.
//
// The queued copy carries tag in its WATCH_INFO_ID byte.
//
// Queuing rec behind a note moves newestLost into that note's slot (see
// note.setLost for how large a count it keeps).
//
// Preconditions: q.mu is held; 8 <= len(rec) <= 127.
func (q *Queue) postLocked(rec []byte, tag record.Tag) (becameReadable bool) {
	if q.closed {
		return false
	}
	if q.fullLocked() {
		q.lost++
		switch {
		case q.count > 0:
			q.newestLost++
		case q.held > 0:
			q.loseBehindHeldLocked(1)
		}
		return false
	}
	wasReadable := q.readableLocked()
	if q.heldLost > 0 {
		// The first record behind the held ones: the loss waiting
		// behind them is read before it.
		q.lossPending += q.heldLost
		q.heldLost = 0
	}
	if q.newestLost > 0 {
		q.notes[q.slotLocked(q.count-1)].setLost(q.newestLost)
		q.newestLost = 0
	}
	n := &q.notes[q.slotLocked(q.count)]
	l := copy(n[:], rec)
	record.SetTag(n[:], tag)
	n.clearLost(l)
	q.count++
	q.posted++
	return !wasReadable || q.readers > 0
}

// slotLocked returns the ring index of the i'th queued note (without a
// division: capacities are multiples of 32, not powers of two).
//
// Preconditions: q.mu is held; 0 <= i < len(q.notes).
func (q *Queue) slotLocked(i int) int {
	if i += q.first; i >= len(q.notes) {
		i -= len(q.notes)
	}
	return i
}

// lossLocked accounts n records lost upstream of the queue: they count
// against the newest queued record, or, on an empty ring, are reported
// before the next record. An unsized queue only counts them: like every
// record posted to it they are lost without a loss record.
//
// Preconditions: q.mu is held.
func (q *Queue) lossLocked(n uint64) (becameReadable bool) {
	if q.closed || n == 0 {
		return false
	}
	q.lost += n
	if len(q.notes) == 0 {
		return false // unsized
	}
	if q.count > 0 {
		q.newestLost += n
		return false
	}
	if q.held > 0 {
		q.loseBehindHeldLocked(n)
		return false
	}
	wasReadable := q.readableLocked()
	q.lossPending += n
	return !wasReadable || q.readers > 0
}

// postThrough delivers one record to the queue through w, stamped with
// tag, unless w has left the queue: then its removal record has been
// posted (or the queue closed), and nothing may follow it. ok reports
// whether the record reached the queue, queued or lost for lack of room;
// queued and lost say which (neither if the queue has closed).
func (q *Queue) postThrough(w *watch, rec []byte, tag record.Tag) (ok, queued, lost bool) {
	q.mu.Lock()
	if !w.onQueue {
		q.mu.Unlock()
		return false, false, false
	}
	posted, was := q.posted, q.lost
	wake := q.postLocked(rec, tag)
	queued, lost = q.posted != posted, q.lost != was
	q.unlock()
	if wake {
		q.notify()
	}
	return true, queued, lost
}

// notify wakes one blocked reader and tells the ReadySet.
func (q *Queue) notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
	if rs := q.ready.Load(); rs != nil {
		rs.mark(q)
	}
}

// Close destroys the queue: its watches are removed without removal
// records, queued records are discarded, blocked readers wake with
// ErrClosed, later posts are dropped. Corresponds to
// kernel/watch_queue.c:watch_queue_clear via free_pipe_info. Close is
// idempotent.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	ws := make([]*watch, 0, q.nwatches)
	for q.watches != nil {
		ws = append(ws, q.watches)
		q.unlinkWatchLocked(q.watches)
	}
	q.count, q.lossPending, q.newestLost = 0, 0, 0
	// No Holder call after Close: its pipe may be closed next.
	q.holder, q.held, q.heldLost, q.heldSignal = nil, 0, 0, false
	q.notes = nil
	q.mu.Unlock()
	close(q.done)
	for _, w := range ws {
		w.list.detach(w)
	}
	if rs := q.ready.Load(); rs != nil {
		rs.mark(q)
	}
	return nil
}

// linkWatchLocked puts w on the queue's list of watches.
//
// Preconditions: q.mu is held; w is on no queue's list.
func (q *Queue) linkWatchLocked(w *watch) {
	w.qprev, w.qnext = nil, q.watches
	if q.watches != nil {
		q.watches.qprev = w
	}
	q.watches = w
	w.onQueue = true
	q.nwatches++
}

// unlinkWatchLocked takes w off the queue's list of watches.
//
// Preconditions: q.mu is held; w is on the queue's list.
func (q *Queue) unlinkWatchLocked(w *watch) {
	if w.qprev != nil {
		w.qprev.qnext = w.qnext
	} else {
		q.watches = w.qnext
	}
	if w.qnext != nil {
		w.qnext.qprev = w.qprev
	}
	w.qprev, w.qnext, w.onQueue = nil, nil, false
	q.nwatches--
}

// Done returns a channel closed when the queue is closed.
func (q *Queue) Done() <-chan struct{} { return q.done }

// QueueStats is a snapshot of a queue's counters.
type QueueStats struct {
	Capacity  int    // notes; 0 until SetSize
	Queued    int    // records waiting to be read
	Watches   int    // watches delivering into the queue
	Posted    uint64 // records queued
	Delivered uint64 // records handed to readers
	Lost      uint64 // records dropped because the queue was full, or lost upstream
	Filtered  uint64 // records the filter kept out
	Denied    uint64 // records the policy kept out
	Closed    bool
}

// Stats returns the queue's counters.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return QueueStats{
		Capacity: len(q.notes), Queued: q.count, Watches: q.nwatches,
		Posted: q.posted, Delivered: q.delivered, Lost: q.lost,
		Filtered: q.filtered.Load(), Denied: q.denied.Load(), Closed: q.closed,
	}
}

// String describes the queue for logs.
func (q *Queue) String() string {
	s := q.Stats()
	return fmt.Sprintf("queue{%d/%d lost=%d}", s.Queued, s.Capacity, s.Lost)
}
