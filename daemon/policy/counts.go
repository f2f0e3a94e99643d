package policy

import (
	"sync/atomic"

	"github.com/watchq/watchq/record"
)

// Record classes the policy counts its post decisions by: the three device
// classes of watchqd.conf(5) and publisher records (every type together).
const (
	ClassUSB = iota
	ClassBlockErrors
	ClassBlockLifecycle
	ClassPublisher
	NumClasses
)

// ClassNames are the classes' names, as watchqd.conf(5) spells the device
// ones; stat and the metrics endpoint use them.
var ClassNames = [NumClasses]string{"usb", "block-errors", "block-lifecycle", "publisher"}

// ClassCount is how many copies of a class's records PostAllowed let
// through to a watcher's queue (where they are queued, or lost if the
// queue is full) and how many it kept out. The engine asks only after the
// queue's filter passed a record, so filtered records are not counted
// here (they are per queue, Filtered).
type ClassCount struct{ Allowed, Denied uint64 }

// classCounters are the policy's post decisions by class. Each counter is
// atomic; no lock.
type classCounters [NumClasses]struct{ allowed, denied atomic.Uint64 }

// classIndex returns the counting class of a record of type t and subtype
// s, or -1 for records PostAllowed refuses on any list.
func classIndex(t record.Type, s uint8) int {
	switch {
	case t.IsPublisher():
		return ClassPublisher
	case t == record.TypeUSB:
		return ClassUSB
	case t == record.TypeBlock && record.IsBlockError(s):
		return ClassBlockErrors
	case t == record.TypeBlock:
		return ClassBlockLifecycle
	}
	return -1
}

// count notes one post decision on a record of type t, subtype s.
func (p *Policy) count(t record.Type, s uint8, allowed bool) {
	i := classIndex(t, s)
	if i < 0 {
		return
	}
	if allowed {
		p.counts[i].allowed.Add(1)
	} else {
		p.counts[i].denied.Add(1)
	}
}

// Counts returns the post decisions made so far, by class (ClassUSB...).
func (p *Policy) Counts() [NumClasses]ClassCount {
	var out [NumClasses]ClassCount
	for i := range p.counts {
		out[i] = ClassCount{Allowed: p.counts[i].allowed.Load(), Denied: p.counts[i].denied.Load()}
	}
	return out
}
