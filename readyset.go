package watchq

import (
	"context"
	"slices"
	"sync"
)

// ReadySet lets one goroutine wait for any of many queues to become
// readable, without a goroutine per queue (the role epoll plays for
// notification pipes).
//
// A queue is reported when it goes from empty to readable (a record or a
// pending loss record) or is closed. The reporting is edge-triggered: after
// Wait returns a queue, drain it with TryRead until ErrWouldBlock, or it
// will not be reported again. No report is ever dropped while the queue
// stays in the set.
type ReadySet struct {
	// ch holds one pending wake-up for Wait. Never closed.
	ch chan struct{}

	mu sync.Mutex // guards ready and reported
	// ready is the queues reported since the last Wait, in report order.
	ready []*Queue
	// reported holds the queues in ready, so each is listed once. The set
	// keeps these flags itself (as an epoll instance keeps its own ready
	// list): a queue moved to another set before this one collected it
	// is reported afresh there.
	reported map[*Queue]struct{}
}

// NewReadySet returns an empty set.
func NewReadySet() *ReadySet {
	return &ReadySet{ch: make(chan struct{}, 1), reported: make(map[*Queue]struct{})}
}

// Add makes q report to the set. A queue reports to at most one set; Add
// replaces any earlier one. If q is readable already it is reported at once.
func (rs *ReadySet) Add(q *Queue) {
	q.ready.Store(rs)
	if q.Readable() {
		rs.mark(q)
	}
}

// Remove stops q reporting to the set; a report not yet collected by Wait
// is withdrawn.
func (rs *ReadySet) Remove(q *Queue) {
	q.ready.CompareAndSwap(rs, nil)
}

// mark adds q to the ready list unless it is there already.
func (rs *ReadySet) mark(q *Queue) {
	rs.mu.Lock()
	if _, ok := rs.reported[q]; ok {
		rs.mu.Unlock()
		return
	}
	rs.reported[q] = struct{}{}
	rs.ready = append(rs.ready, q)
	rs.mu.Unlock()
	select {
	case rs.ch <- struct{}{}:
	default:
	}
}

// Wait blocks until at least one queue has been reported, then returns the
// reported queues (each once) and clears the report. Queues that left the
// set (Remove, or Add to another set) since their report are left out. It
// returns ctx.Err() when ctx ends first.
func (rs *ReadySet) Wait(ctx context.Context) ([]*Queue, error) {
	for {
		rs.mu.Lock()
		ready := rs.ready
		rs.ready = nil
		clear(rs.reported)
		rs.mu.Unlock()
		ready = slices.DeleteFunc(ready, func(q *Queue) bool { return q.ready.Load() != rs })
		if len(ready) > 0 {
			return ready, nil
		}
		select {
		case <-rs.ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
