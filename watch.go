package watchq

import (
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/watchq/watchq/record"
)

// A watch is one subscription of a queue to an object (struct watch).
//
// # Who knows whom
//
// This is the one place where the engine's two-way knowledge lives. As in
// the kernel, each watch sits on two lists at once:
//
//   - its object's chain in the WatchList (watch->list_node on struct
//     watch_list's watchers), through next and prev. Post walks it, without
//     a lock (objtable.go), to find the queues a record goes to;
//   - its queue's list (watch->queue_node on struct watch_queue's
//     watches), through qnext and qprev. Queue.Close walks it to find the
//     watches to drop.
//
// Both lists are intrusive and doubly linked, so a watch is linked and
// unlinked in O(1) on either side. Apart from these links a WatchList
// knows queues only through its watches and two indexes of them (byKey,
// by queue and object id; queues, a count per queue for PostLoss), and a
// Queue knows lists only through its watches' list field.
//
// A watch's per-user charge belongs to its place on its object's chain:
// whoever unlinks it from the chain (Remove, Destroy, or Close's detach),
// under list.mu, uncharges it, so it is uncharged exactly once however
// Close, Remove and Destroy race. Its removal record belongs to its place
// on the queue's list: whoever unlinks it from there under queue.mu posts
// the record (Remove, Destroy) or drops it silently (Close). Posts through
// the watch check, under queue.mu, that it is still on the queue's list,
// so nothing it delivers can follow its removal record.
type watch struct {
	list   *WatchList      // immutable
	queue  *Queue          // immutable
	id     record.ObjectID // object id matched against posts; immutable
	infoID uint32          // tag << 8 (watch->info_id); immutable
	cred   *Cred           // the watcher's credentials (watch->cred); immutable

	// next is the chain's next watch: stored under list.mu, loaded by
	// Post. It is left as it was when the watch is unlinked, for posters
	// standing on it.
	next atomic.Pointer[watch]
	// prev is the chain's previous watch, and onList is set while the
	// watch is on the chain. Guarded by list.mu.
	prev   *watch
	onList bool

	// onQueue is set while the watch is on its queue's list; qprev and
	// qnext link it there. Guarded by queue.mu.
	onQueue      bool
	qprev, qnext *watch
}

// watchKey names a watch by what must be unique: (queue, object id).
type watchKey struct {
	q  *Queue
	id record.ObjectID
}

// WatchList is the set of watches on one watched object (struct
// watch_list): one per key, one global list for devices, one for the
// publishers (a watch's object id being the publisher type). Sources post
// records to it; each watch on the object id posted to gets its own copy.
//
// Adding or removing a watch is O(1) amortised in the number of watches
// and objects; Post is O(n) in the n watches of the object posted to,
// whatever else the list holds; PostLoss is O(queues) and Destroy
// O(watches).
type WatchList struct {
	eng  *Engine // immutable
	obj  Object  // immutable
	seed uint64  // the hash seed of the object table; immutable

	// table finds an object's chain for Post: replaced (and its buckets
	// changed) under mu, read without a lock.
	table atomic.Pointer[objTable]
	// n is the number of watches: stored under mu, loaded by Len.
	n atomic.Int64

	// mu serialises every change to the list (wlist->lock): the fields
	// below, table, the chains and the watches' list links. Post takes it
	// not at all; PostLoss takes it to walk queues. Lock order:
	// WatchList.mu before Queue.mu; Engine.mu is a leaf.
	mu sync.Mutex
	// chains holds each watched object's chain; an object with no watch
	// has none.
	chains map[record.ObjectID]*chain
	// byKey finds a watch by (queue, id): the duplicate check and
	// Remove's look-up.
	byKey map[watchKey]*watch
	// queues counts, per queue, the list's watches delivering into it:
	// the queues PostLoss tells, each once.
	queues map[*Queue]int
	// dead is set by Destroy; no watch can be added afterwards.
	dead bool
}

// newWatchList returns an empty list for obj in e.
func newWatchList(e *Engine, obj Object) *WatchList {
	wl := &WatchList{
		eng: e, obj: obj, seed: rand.Uint64(),
		chains: make(map[record.ObjectID]*chain),
		byKey:  make(map[watchKey]*watch),
		queues: make(map[*Queue]int),
	}
	wl.table.Store(newObjTable(wl.seed, 1, nil))
	return wl
}

// Len returns the number of watches.
func (wl *WatchList) Len() int { return int(wl.n.Load()) }

// Add attaches a watch on object id by watcher to q, delivering records
// stamped with tag. Corresponds to kernel/watch_queue.c:add_watch_to_object
// preceded by the security_watch_* hook: the policy may refuse (EACCES),
// a second watch for the same (queue, id) is ErrWatchExists (EBUSY), a user
// over its watch limit gets ErrTooManyWatches (EAGAIN), a closed queue
// ErrQueueDead (ENOENT), a destroyed object ErrListDead (ENOENT).
func (wl *WatchList) Add(q *Queue, id record.ObjectID, tag record.Tag, watcher *Cred) error {
	if watcher == nil {
		return errInval("nil watcher credentials")
	}
	obj := wl.obj
	obj.ID = id
	if err := wl.eng.policy.WatchAllowed(watcher, obj); err != nil {
		return err
	}
	w := &watch{list: wl, queue: q, id: id, infoID: uint32(tag) << record.InfoIDShift, cred: watcher}

	wl.mu.Lock()
	defer wl.mu.Unlock()
	if wl.dead {
		return ErrListDead
	}
	if wl.byKey[watchKey{q, id}] != nil {
		return ErrWatchExists
	}
	if err := wl.eng.charge(watcher.UID); err != nil {
		return err
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		wl.eng.uncharge(watcher.UID)
		return ErrQueueDead
	}
	q.linkWatchLocked(w)
	q.mu.Unlock()
	wl.linkLocked(w)
	return nil
}

// Remove removes q's watch on object id and posts a removal record to q:
// 16 bytes carrying id, or 8 bytes when id is 0. No such watch is
// ErrNoWatch (EBADSLT). Corresponds to
// kernel/watch_queue.c:remove_watch_from_object with all=false.
//
// The removal record is the last record q gets through the watch, even
// from a Post already under way: Remove is a barrier. (In the kernel it is
// not: __post_watch_notification walks the watchers under RCU and may
// still deliver through a watch after remove_watch_from_object posted its
// removal record.)
func (wl *WatchList) Remove(q *Queue, id record.ObjectID) error {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	w := wl.byKey[watchKey{q, id}]
	if w == nil {
		return ErrNoWatch
	}
	wl.unlinkLocked(w)
	wl.retireLocked(w)
	return nil
}

// Destroy removes every watch, posting each its removal record, and makes
// the list refuse new watches: the watched object is gone. Corresponds to
// kernel/watch_queue.c:remove_watch_list. Like Remove it is a barrier.
// Removal records go out by object id, and for one object in the order
// the watches were added. Destroy is idempotent.
func (wl *WatchList) Destroy() {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if wl.dead {
		return
	}
	wl.dead = true
	for _, id := range slices.Sorted(maps.Keys(wl.chains)) {
		for w := wl.chains[id].head.Load(); w != nil; {
			next := w.next.Load()
			wl.unlinkLocked(w)
			wl.retireLocked(w)
			w = next
		}
	}
}

// linkLocked appends w to its object's chain, making the chain if it is
// the object's first watch, and indexes it.
//
// Preconditions: wl.mu is held; w is on no chain.
func (wl *WatchList) linkLocked(w *watch) {
	c := wl.chains[w.id]
	if c == nil {
		c = &chain{id: w.id}
		wl.chains[w.id] = c
		if t := wl.table.Load(); len(wl.chains) > len(t.buckets) {
			wl.table.Store(newObjTable(wl.seed, 2*len(t.buckets), wl.chains))
		} else {
			t.insertLocked(c)
		}
	}
	w.prev = c.tail
	w.next.Store(nil)
	w.onList = true
	if c.tail != nil {
		c.tail.next.Store(w) // publishes w to posters
	} else {
		c.head.Store(w)
	}
	c.tail = w
	wl.byKey[watchKey{w.queue, w.id}] = w
	wl.queues[w.queue]++
	wl.n.Add(1)
}

// unlinkLocked takes w off its object's chain (dropping the chain if it
// was the last watch) and out of the indexes, and uncharges it (see
// watch). w keeps its next pointer for posters standing on it.
//
// Preconditions: wl.mu is held; w is on its chain.
func (wl *WatchList) unlinkLocked(w *watch) {
	c := wl.chains[w.id]
	next := w.next.Load()
	if w.prev != nil {
		w.prev.next.Store(next)
	} else {
		c.head.Store(next)
	}
	if next != nil {
		next.prev = w.prev
	} else {
		c.tail = w.prev
	}
	w.prev, w.onList = nil, false
	if c.head.Load() == nil {
		delete(wl.chains, c.id)
		if t := wl.table.Load(); len(t.buckets) > 1 && len(wl.chains) < len(t.buckets)/4 {
			wl.table.Store(newObjTable(wl.seed, len(t.buckets)/2, wl.chains))
		} else {
			t.removeLocked(c)
		}
	}
	delete(wl.byKey, watchKey{w.queue, w.id})
	if wl.queues[w.queue]--; wl.queues[w.queue] == 0 {
		delete(wl.queues, w.queue)
	}
	wl.n.Add(-1)
	wl.eng.uncharge(w.cred.UID)
}

// retireLocked takes w off its queue's list and posts the removal record
// (straight to the queue: no filter, no policy, as
// remove_watch_from_object calls post_one_notification directly). If the
// queue is being closed it has taken w off already, and nothing is posted.
//
// Preconditions: wl.mu is held; w is off its object's chain.
func (wl *WatchList) retireLocked(w *watch) {
	q := w.queue
	var b [record.RemovalSize]byte
	rec, _ := record.Removal{Tag: record.Tag(w.infoID >> record.InfoIDShift), ID: w.id}.AppendBinary(b[:0])
	q.mu.Lock()
	wake := false
	if w.onQueue {
		q.unlinkWatchLocked(w)
		wake = q.postLocked(rec, record.Tag(w.infoID>>record.InfoIDShift))
	}
	q.unlock()
	if wake {
		q.notify()
	}
}

// detach takes w off the list without a removal record: its queue is
// being closed and has taken w off its own list already. If Remove or
// Destroy took w off first, there is nothing left to do.
func (wl *WatchList) detach(w *watch) {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if w.onList {
		wl.unlinkLocked(w)
	}
}

// Post delivers rec, generated by generator, to every watch on object id:
// each copy is stamped with the watch's tag, checked against the watch's
// queue filter and then the policy, and queued. Corresponds to
// kernel/watch_queue.c:__post_watch_notification. Post takes no lock but
// each receiving queue's own, never blocks on a reader and never
// allocates; a full queue loses the record and says so in-band. It
// touches only the watches of object id, whatever else the list holds. It
// returns the number of queues the record was queued to (or lost in for
// lack of room).
//
// Like the kernel's RCU walk, Post sees each watch added or removed while
// it runs either before or after the change: a watch added meanwhile may
// or may not get the record. A watch removed meanwhile gets it only before
// its removal record, if at all (see Remove).
//
// rec must be one whole record whose length field is len(rec) (8..127
// bytes); anything else is dropped and 0 returned. Like the kernel's
// __post_watch_notification, Post may stamp the tag into rec's info field
// while it runs (restoring it before returning), so rec must not be read
// or posted concurrently by another goroutine.
func (wl *WatchList) Post(rec []byte, generator *Cred, id record.ObjectID) int {
	if !record.IsWhole(rec) {
		return 0
	}
	c := wl.table.Load().lookup(id)
	if c == nil {
		return 0
	}
	h := record.HeaderAt(rec)
	meta := h.Type == record.TypeMeta
	policy := wl.eng.policy
	askPolicy := !meta && !wl.eng.postAlwaysAllowed
	var counter PostCounter
	if !meta {
		counter = wl.eng.counter
	}
	delivered := 0
	for w := c.head.Load(); w != nil; w = w.next.Load() {
		q := w.queue
		info := h.Info&^record.InfoID | w.infoID
		if f := q.filter.Load(); f != nil && !meta && !f.Match(h.Type, h.Subtype, info) {
			q.filtered.Add(1)
			if counter != nil {
				counter.CountPost(h, PostFiltered)
			}
			continue
		}
		if askPolicy {
			// Stamp the tag in place so the policy sees this watch's
			// copy, as security_post_notification does.
			record.SetTag(rec, record.Tag(info>>record.InfoIDShift))
			err := policy.PostAllowed(w.cred, generator, record.Record(rec))
			record.SetTag(rec, h.Tag())
			if err != nil {
				q.denied.Add(1)
				if counter != nil {
					counter.CountPost(h, PostDenied)
				}
				continue
			}
		}
		if ok, queued, lost := q.postThrough(w, rec, record.Tag(info>>record.InfoIDShift)); ok {
			delivered++
			switch {
			case counter == nil:
			case queued:
				counter.CountPost(h, PostQueued)
			case lost:
				counter.CountPost(h, PostLost)
			}
		}
	}
	return delivered
}

// PostLoss reports that n records meant for this list were lost before
// they reached the engine (a socket overrun, ring-buffer drops). Every
// queue with a watch on the list reports the loss in-band, once however
// many watches it has here, and in order: it is counted against the newest
// queued record, or reported first if nothing is queued.
func (wl *WatchList) PostLoss(n uint64) {
	if n == 0 {
		return
	}
	wl.mu.Lock()
	defer wl.mu.Unlock()
	for q := range wl.queues {
		q.mu.Lock()
		wake := q.lossLocked(n)
		q.unlock()
		if wake {
			q.notify()
		}
	}
}
