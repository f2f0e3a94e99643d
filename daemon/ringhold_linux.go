package daemon

import (
	"sync"

	"github.com/watchq/watchq/internal/shmring"
)

// ringHold is a ring queue's watchq.Holder, inflight's counterpart: the
// records the pump put into the ring keep their notes in the engine queue
// until the consumer's tail has passed them, so the engine queue and the
// ring together hold what one notification pipe of the client's size
// holds, and lose where it would.
//
// The tail is the consumer's, untrusted: one behind what it last
// reported, or past what was put, is believed as far as nothing (no note
// comes back), so a garbage index only makes that consumer's own queue
// lose sooner. One that claims records it has not read frees their notes
// early: its own records again (the ring's Free believes it the same way).
type ringHold struct {
	reclaimPoll
	p *shmring.Producer // immutable; Tail only, the rest is the pump's

	// mu guards below. Lock order: the engine queue's lock (Consumed's
	// caller), then mu.
	mu sync.Mutex
	// puts are the puts whose records are not yet known read, oldest
	// first: the head after each and its record count.
	puts []ringPut
}

// ringPut is one put into the ring: the ring's head after it, and the
// records (not loss records) it carried.
type ringPut struct {
	end     uint64
	records int
}

// add notes a put of records records that will end at end. The pump calls
// it before it publishes them, so that a consumer can never be seen past
// what the list holds.
func (h *ringHold) add(end uint64, records int) {
	if records == 0 {
		return
	}
	h.mu.Lock()
	h.puts = append(h.puts, ringPut{end, records})
	h.mu.Unlock()
}

// Consumed reports the records of the puts the consumer's tail has
// passed since the last call. The engine queue calls it with its lock
// held.
func (h *ringHold) Consumed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.puts) == 0 {
		return 0
	}
	tail := h.p.Tail()
	if tail > h.puts[len(h.puts)-1].end {
		return 0 // past what was put: garbage
	}
	n, i := 0, 0
	for ; i < len(h.puts) && h.puts[i].end <= tail; i++ {
		n += h.puts[i].records
	}
	h.puts = append(h.puts[:0], h.puts[i:]...)
	return n
}
