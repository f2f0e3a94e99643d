package watchq

import (
	"context"
	"iter"

	"github.com/watchq/watchq/record"
)

// The reading side of a Queue: fs/pipe.c's pipe_read for a notification
// pipe, and readiness.

// readLocked copies whole records into buf: first any pending loss record,
// then queued records, each followed at once by a loss record if records
// were lost after it. It stops at the first record that does not fit.
// Corresponds to fs/pipe.c:pipe_read for a notification pipe.
//
// With one set it stops after the first record (or loss record).
//
// Preconditions: q.mu is held.
func (q *Queue) readLocked(buf []byte, one bool) (int, error) {
	if len(buf) == 0 {
		// pipe_read's "Null read succeeds": 0 before looking at the
		// ring, whatever it holds.
		if q.closed {
			return 0, ErrClosed
		}
		return 0, nil
	}
	off := 0
	for {
		if q.lossPending > 0 {
			if len(buf)-off < record.LossSize {
				break
			}
			record.PutLoss(buf[off:], q.lossPending)
			off += record.LossSize
			q.lossPending = 0
			if one {
				break
			}
		}
		if q.count == 0 || (one && off > 0) {
			break
		}
		n := &q.notes[q.first]
		l := n.size()
		if l > len(buf)-off {
			break
		}
		off += copy(buf[off:], n[:l])
		if q.holder != nil {
			q.held++
		}
		switch {
		case q.count > 1:
			q.lossPending = n.lost(l)
		case q.holder != nil && q.newestLost > 0:
			// The newest record goes downstream with its loss
			// behind it: the loss waits there (hold.go).
			q.loseBehindHeldLocked(min(q.newestLost, maxLost(l)))
			q.newestLost = 0
		default:
			q.lossPending, q.newestLost = min(q.newestLost, maxLost(l)), 0
		}
		if q.first++; q.first == len(q.notes) {
			q.first = 0
		}
		q.count--
		q.delivered++
		if one {
			break
		}
	}
	if off == 0 {
		if q.closed {
			return 0, ErrClosed
		}
		if q.readableLocked() {
			return 0, ErrBufferTooSmall
		}
		return 0, ErrWouldBlock
	}
	return off, nil
}

// TryRead reads whole records into buf without blocking. It returns
// ErrWouldBlock (EAGAIN) when nothing is queued, ErrBufferTooSmall (ENOBUFS)
// when the next record does not fit (nothing is consumed), ErrClosed after
// Close. An empty buf reads 0 bytes and no error, as read(2) of 0 bytes
// does.
func (q *Queue) TryRead(buf []byte) (int, error) {
	q.mu.Lock()
	n, err := q.readLocked(buf, false)
	again := err == nil && q.readers > 0 && q.readableLocked()
	q.unlock()
	if again {
		q.notify() // pass the wake-up on to another blocked reader
	}
	return n, err
}

// Read blocks until at least one record is queued, then packs as many whole
// records into buf as fit, like read(2) on a notification pipe. It returns
// ErrBufferTooSmall (ENOBUFS) if the next record does not fit in buf,
// ctx.Err() when ctx ends, and ErrClosed once the queue is closed. An empty
// buf returns 0 at once without blocking, as read(2) of 0 bytes does.
func (q *Queue) Read(ctx context.Context, buf []byte) (int, error) {
	return q.read(ctx, buf, false)
}

// Next blocks for the next record and returns a copy of it.
func (q *Queue) Next(ctx context.Context) (record.Record, error) {
	var b [record.NoteSize]byte
	n, err := q.read(ctx, b[:], true)
	if err != nil {
		return nil, err
	}
	return record.Record(append([]byte(nil), b[:n]...)), nil
}

// read is Read, or with one set Next's read of a single record.
func (q *Queue) read(ctx context.Context, buf []byte, one bool) (int, error) {
	for {
		q.mu.Lock()
		n, err := q.readLocked(buf, one)
		if err != ErrWouldBlock {
			again := err == nil && q.readers > 0 && q.readableLocked()
			q.unlock()
			if again {
				q.notify() // pass the wake-up on to another blocked reader
			}
			return n, err
		}
		q.readers++
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.done:
		case <-ctx.Done():
			q.mu.Lock()
			q.readers--
			q.mu.Unlock()
			return 0, ctx.Err()
		}
		q.mu.Lock()
		q.readers--
		q.mu.Unlock()
	}
}

// Records iterates over the queue's records, blocking for each, until ctx
// ends or the queue is closed; the final error (ctx.Err() or ErrClosed) is
// yielded once with a nil record.
func (q *Queue) Records(ctx context.Context) iter.Seq2[record.Record, error] {
	return record.Each(ctx, q)
}

// Readable reports whether a read would return at once: data (a record or
// a pending loss record) or ErrClosed. See readableLocked for how this
// differs from the kernel's poll.
func (q *Queue) Readable() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.readableLocked() || q.closed
}

// readableLocked reports whether a read would return data now: a queued
// record or a pending loss record. It decides Readable, the wake-ups of
// blocked readers and the reports to a ReadySet.
//
// The kernel differs on a pending loss alone. pipe_poll reports EPOLLIN
// only while the ring holds a record, and a post wakes readers only when it
// queues one; yet pipe_read emits a pending note_loss before it looks at
// the ring, so a read(2) returns that loss record at once, blocking or not.
// (The kernel gets there after a read consumed a flagged record that was
// the last one queued, or with no room left for the loss record.) watchq
// sides with read: a pending loss counts as readable everywhere, for two
// reasons. It is data a read returns without waiting, so Readable says
// what a read will do. And WatchList.PostLoss, which has no kernel
// counterpart, puts a loss on an empty ring: counted as unreadable it would
// wait unseen for the next record, which on a quiet source may never come.
// A consumer written for the kernel loses nothing by it: it reads until
// EAGAIN and meets the loss record either way.
//
// Preconditions: q.mu is held.
func (q *Queue) readableLocked() bool { return q.count > 0 || q.lossPending > 0 }
