package watchq

import "github.com/watchq/watchq/record"

// PostOutcome is what became of one copy of a record that WatchList.Post
// offered to one watch.
type PostOutcome uint8

// Post outcomes, the same figures as a queue's QueueStats counters.
const (
	PostQueued   PostOutcome = iota // queued (QueueStats.Posted)
	PostLost                        // lost to a full queue (QueueStats.Lost)
	PostFiltered                    // kept out by the queue's filter (QueueStats.Filtered)
	PostDenied                      // kept out by the policy (QueueStats.Denied)
)

// PostCounter is told the outcome of every copy of a non-meta record
// that Post offers to a watch, with the record's header, so that a user of
// the engine can count by what the record is (watchqd counts by device
// class and publisher type). It runs on the posting path: it must not
// block or allocate. Meta records (removal, loss) are not reported.
type PostCounter interface {
	CountPost(h record.Header, o PostOutcome)
}
