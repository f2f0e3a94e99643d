package watchq

import (
	"sync/atomic"

	"github.com/watchq/watchq/record"
)

// The lock-free side of a WatchList: how Post finds the watches on one
// object without taking a lock, as __post_watch_notification walks
// wlist->watchers under rcu_read_lock().
//
// Readers (Post) use atomic loads only: no lock, no read-modify-write, so
// posters never contend with one another or wait for a writer. Writers
// (Add, Remove, Destroy, Queue.Close's detach) hold WatchList.mu and
// publish each change with one atomic store, so a reader sees a list
// either before or after it. Nothing is freed under a reader: an unlinked
// watch keeps its next pointer, so a reader standing on it walks on into
// the chain (hlist_del_rcu keeps ->next for the same reason), and the
// garbage collector keeps unlinked watches, entries and tables alive until
// no reader holds them, which is the grace period RCU waits for.
//
// An RWMutex would be simpler but not cheap enough: its read side is two
// atomic read-modify-writes per post, on a cache line every poster shares,
// which on the development machine cost 20 ns, half the price of a whole
// delivered record.

// chain is one object's watches in the order they were added: the part
// of wlist->watchers whose watch->id is that object's. It is linked
// through watch.next (for readers) and watch.prev (for writers).
type chain struct {
	id record.ObjectID // immutable
	// head is the first watch: stored under WatchList.mu, loaded by
	// readers.
	head atomic.Pointer[watch]
	// tail is the last watch, and entry c's entry in the published
	// table. Guarded by WatchList.mu.
	tail  *watch
	entry *objEntry
}

// objEntry links a chain into one bucket of an objTable.
type objEntry struct {
	c *chain // immutable
	// next is the bucket's next entry: stored under WatchList.mu, loaded
	// by readers.
	next atomic.Pointer[objEntry]
}

// objTable maps object ids to chains: a hash table of a power of two
// buckets, each a list of entries. A table never changes size: growing or
// shrinking builds a new table with new entries, O(objects), and publishes
// it in place of the old, at most once per doubling or halving of the
// number of objects, so amortised O(1) per object added or dropped. The
// hash is keyed by a random seed per list, so the ids chosen by users
// (publisher types) cannot be picked to share a bucket.
type objTable struct {
	seed  uint64 // immutable
	shift uint   // 64 - log2(len(buckets)); immutable
	// buckets' heads are stored under WatchList.mu and loaded by readers.
	buckets []atomic.Pointer[objEntry]
}

// newObjTable returns a table of size buckets (a power of two) holding
// chains, and points each chain's entry at its entry there. The caller
// publishes it.
//
// Preconditions: WatchList.mu is held, or chains is empty.
func newObjTable(seed uint64, size int, chains map[record.ObjectID]*chain) *objTable {
	t := &objTable{seed: seed, shift: 64, buckets: make([]atomic.Pointer[objEntry], size)}
	for n := size; n > 1; n >>= 1 {
		t.shift--
	}
	for _, c := range chains {
		t.insertLocked(c)
	}
	return t
}

// bucket returns the head of id's bucket.
func (t *objTable) bucket(id record.ObjectID) *atomic.Pointer[objEntry] {
	if t.shift == 64 {
		return &t.buckets[0] // one bucket: a key's or the device list
	}
	// fmix64, MurmurHash3's finaliser: every bit of the seeded id moves
	// the top bits, which pick the bucket.
	x := uint64(id) ^ t.seed
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return &t.buckets[x>>t.shift]
}

// lookup returns id's chain, or nil. It takes no lock.
func (t *objTable) lookup(id record.ObjectID) *chain {
	for e := t.bucket(id).Load(); e != nil; e = e.next.Load() {
		if e.c.id == id {
			return e.c
		}
	}
	return nil
}

// insertLocked puts c at the head of its bucket.
//
// Preconditions: WatchList.mu is held; c is not in t.
func (t *objTable) insertLocked(c *chain) {
	b := t.bucket(c.id)
	e := &objEntry{c: c}
	e.next.Store(b.Load())
	b.Store(e)
	c.entry = e
}

// removeLocked takes c's entry out of its bucket, leaving the entry's next
// pointer for readers standing on it.
//
// Preconditions: WatchList.mu is held; c is in t.
func (t *objTable) removeLocked(c *chain) {
	link := t.bucket(c.id)
	for e := link.Load(); e != c.entry; e = link.Load() {
		link = &e.next
	}
	link.Store(c.entry.next.Load())
	c.entry = nil
}
