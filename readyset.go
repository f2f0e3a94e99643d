package watchq

import (
	"context"
	"sync"
)

// ReadySet lets one goroutine wait for any of many queues to become
// readable, without a goroutine per queue (the role epoll plays for
// notification pipes).
//
// A queue is reported when it goes from empty to readable (a record or a
// pending loss record) or is closed. The reporting is edge-triggered: after
// Wait returns a queue, drain it with TryRead until ErrWouldBlock, or it
// will not be reported again. No report is ever dropped.
type ReadySet struct {
	// ch holds one pending wake-up for Wait. Never closed.
	ch chan struct{}

	mu    sync.Mutex // guards ready
	ready []*Queue   // queues reported since the last Wait
}

// NewReadySet returns an empty set.
func NewReadySet() *ReadySet { return &ReadySet{ch: make(chan struct{}, 1)} }

// Add makes q report to the set. A queue reports to at most one set; Add
// replaces any earlier one. If q is readable already it is reported at once.
func (rs *ReadySet) Add(q *Queue) {
	q.ready.Store(rs)
	if q.Readable() {
		rs.mark(q)
	}
}

// Remove stops q reporting to the set.
func (rs *ReadySet) Remove(q *Queue) {
	q.ready.CompareAndSwap(rs, nil)
}

// mark adds q to the ready list unless it is there already.
func (rs *ReadySet) mark(q *Queue) {
	if !q.inReady.CompareAndSwap(false, true) {
		return
	}
	rs.mu.Lock()
	rs.ready = append(rs.ready, q)
	rs.mu.Unlock()
	select {
	case rs.ch <- struct{}{}:
	default:
	}
}

// Wait blocks until at least one queue has been reported, then returns the
// reported queues (each once) and clears the report. It returns ctx.Err()
// when ctx ends first.
func (rs *ReadySet) Wait(ctx context.Context) ([]*Queue, error) {
	for {
		rs.mu.Lock()
		ready := rs.ready
		rs.ready = nil
		rs.mu.Unlock()
		if len(ready) > 0 {
			for _, q := range ready {
				q.inReady.Store(false)
			}
			return ready, nil
		}
		select {
		case <-rs.ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
