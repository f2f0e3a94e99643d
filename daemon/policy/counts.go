package policy

import (
	"sync/atomic"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// Record classes the policy counts posts by: the three device classes of
// watchqd.conf(5) and publisher records (every type together: per type
// would let publishers grow the table).
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

// ClassCount is what became of the copies of one class's records that the
// engine offered to watches: the per-queue figures of QueueStats (posted,
// lost, filtered, denied), summed over every queue, by class.
type ClassCount struct{ Posted, Lost, Filtered, Denied uint64 }

// classCounters are the counts by class and outcome
// (watchq.PostQueued...). Each is atomic; no lock.
type classCounters [NumClasses][watchq.PostDenied + 1]atomic.Uint64

// classIndex returns the counting class of a record of type t and subtype
// s, or -1 for records of no class.
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

// CountPost implements watchq.PostCounter: the engine reports each copy's
// outcome (give the Policy as watchq.Config.Counter). It does not
// allocate.
func (p *Policy) CountPost(h record.Header, o watchq.PostOutcome) {
	if i := classIndex(h.Type, h.Subtype); i >= 0 && int(o) < len(p.counts[i]) {
		p.counts[i][o].Add(1)
	}
}

// Counts returns the outcomes counted so far, by class (ClassUSB...).
func (p *Policy) Counts() [NumClasses]ClassCount {
	var out [NumClasses]ClassCount
	for i := range p.counts {
		c := &p.counts[i]
		out[i] = ClassCount{Posted: c[watchq.PostQueued].Load(), Lost: c[watchq.PostLost].Load(),
			Filtered: c[watchq.PostFiltered].Load(), Denied: c[watchq.PostDenied].Load()}
	}
	return out
}
