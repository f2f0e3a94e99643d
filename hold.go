package watchq

// Held notes: a queue whose reader forwards records into a second queue
// it cannot see into (watchqd's pump, which copies them into a client's
// pipe). A notification pipe frees a note only when the reader consumes
// its record (watch_queue_pipe_buf_release clears the note's bit), so its
// capacity counts every record not yet read. A forwarding reader breaks
// that: a record it has taken has left the engine queue but not reached
// the final reader, and the two queues together would hold more than the
// capacity, losing later, and in other places, than the kernel does. With
// a Holder, every record read stays counted against the capacity until
// the Holder reports it consumed, so loss falls exactly where a single
// notification pipe of the same size would put it.

// A Holder stands behind a queue's reader: it holds the records the
// reader took from the queue until their final reader consumes them.
type Holder interface {
	// Consumed reports how many of the records taken from the queue have
	// been consumed since it last returned. The queue calls it, with its
	// lock held, when a post finds every note taken and on Reclaim; it
	// must not block or call the queue.
	Consumed() int
	// LossWaiting is called, without the queue's lock, when a record is
	// lost while the newest record is held downstream. Its loss record
	// belongs right behind that record, where the kernel's
	// PIPE_BUF_FLAG_LOSS puts it; the queue keeps it (later losses merge
	// into it, as the kernel sets one flag) until a record is queued behind
	// the held ones, or until Reclaim finds them all consumed. The Holder
	// calls Reclaim until it reports nothing waits, or the queue closes.
	LossWaiting()
}

// Hold puts h behind the queue's reader: from now on each record read
// keeps its note until h reports it consumed. Set it before the first
// read; Unhold ends it. A closed queue ignores it.
func (q *Queue) Hold(h Holder) {
	q.mu.Lock()
	if !q.closed {
		q.holder = h
	}
	q.mu.Unlock()
}

// Unhold stops holding: the held notes are free again and a waiting loss
// record is reported before the next record. It is for a forwarder that
// is shutting down and hands over what remains.
func (q *Queue) Unhold() {
	q.mu.Lock()
	q.holder = nil
	q.held = 0
	q.lossPending += q.heldLost
	q.heldLost = 0
	q.mu.Unlock()
}

// Reclaim asks the Holder what has been consumed and frees those notes;
// once every held record is consumed, a waiting loss record becomes
// readable. It reports whether a loss record still waits (see
// Holder.LossWaiting). After Unhold or Close it does nothing: the Holder
// is never called again.
func (q *Queue) Reclaim() (waiting bool) {
	q.mu.Lock()
	if q.holder != nil {
		q.reclaimLocked()
	}
	waiting = q.heldLost > 0
	wake := q.readableLocked() && q.readers > 0
	q.mu.Unlock()
	if wake {
		q.notify()
	}
	return waiting
}

// reclaimLocked frees the notes of the held records consumed since the
// last call; when none is held any more, a waiting loss record becomes
// pending, to be read next (the reader has passed the flagged record).
//
// Preconditions: q.mu is held; q.holder is not nil.
func (q *Queue) reclaimLocked() {
	q.held = max(0, q.held-q.holder.Consumed())
	if q.held == 0 && q.heldLost > 0 {
		q.lossPending += q.heldLost
		q.heldLost = 0
	}
}

// fullLocked reports whether every note is queued or held, after asking
// the Holder, if held notes would make the difference, what has been
// consumed.
//
// Preconditions: q.mu is held.
func (q *Queue) fullLocked() bool {
	if q.count+q.held < len(q.notes) {
		return false
	}
	if q.held > 0 && q.count < len(q.notes) {
		q.reclaimLocked()
	}
	return q.count+q.held >= len(q.notes)
}

// loseBehindHeldLocked counts n records lost when the newest record is
// held downstream: they wait in heldLost (see Holder.LossWaiting), or,
// if a loss record is already pending and so not yet read, join it.
//
// Preconditions: q.mu is held; q.count == 0; q.held > 0.
func (q *Queue) loseBehindHeldLocked(n uint64) {
	if q.lossPending > 0 {
		q.lossPending += n
		return
	}
	if q.heldLost == 0 {
		q.heldSignal = true
	}
	q.heldLost += n
}

// unlock releases q.mu and tells the Holder if a loss began to wait while
// it was held.
//
// Preconditions: q.mu is held.
func (q *Queue) unlock() {
	h, signal := q.holder, q.heldSignal
	q.heldSignal = false
	q.mu.Unlock()
	if signal && h != nil {
		h.LossWaiting()
	}
}
