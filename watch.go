package watchq

import (
	"sync"
	"sync/atomic"

	"github.com/watchq/watchq/record"
)

// watch is one subscription of a queue to an object (struct watch).
type watch struct {
	list   *WatchList      // immutable
	queue  *Queue          // immutable
	id     record.ObjectID // object id matched against posts; immutable
	infoID uint32          // tag << 8 (watch->info_id); immutable
	cred   *Cred           // the watcher's credentials (watch->cred); immutable
}

// WatchList is the set of watches on one watched object (struct
// watch_list): one per key, one global list for devices. Sources post
// records to it; each watch whose id matches gets its own copy.
type WatchList struct {
	eng *Engine // immutable
	obj Object  // immutable

	// watches is a copy-on-write snapshot read without a lock by Post (the
	// kernel walks wlist->watchers under RCU). Replaced under mu.
	watches atomic.Pointer[[]*watch]

	// mu serialises changes to watches and dead (wlist->lock). Lock order:
	// WatchList.mu before Queue.mu.
	mu sync.Mutex
	// dead is set by Destroy; no watch can be added afterwards.
	dead bool
}

// Len returns the number of watches.
func (wl *WatchList) Len() int { return len(*wl.watches.Load()) }

// setLocked publishes a new snapshot. Preconditions: wl.mu is held.
func (wl *WatchList) setLocked(ws []*watch) { wl.watches.Store(&ws) }

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
	old := *wl.watches.Load()
	for _, o := range old {
		if o.queue == q && o.id == id {
			return ErrWatchExists
		}
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
	q.watches = append(q.watches, w)
	q.mu.Unlock()
	ws := make([]*watch, len(old), len(old)+1)
	copy(ws, old)
	wl.setLocked(append(ws, w))
	return nil
}

// Remove removes q's watch on object id and posts a removal record to q:
// 16 bytes carrying id, or 8 bytes when id is 0. No such watch is
// ErrNoWatch (EBADSLT). Corresponds to
// kernel/watch_queue.c:remove_watch_from_object with all=false.
func (wl *WatchList) Remove(q *Queue, id record.ObjectID) error {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	old := *wl.watches.Load()
	for i, w := range old {
		if w.queue == q && w.id == id {
			ws := make([]*watch, 0, len(old)-1)
			ws = append(append(ws, old[:i]...), old[i+1:]...)
			wl.setLocked(ws)
			wl.retireLocked(w)
			wl.eng.uncharge(w.cred.UID)
			return nil
		}
	}
	return ErrNoWatch
}

// Destroy removes every watch, posting each its removal record, and makes
// the list refuse new watches: the watched object is gone. Corresponds to
// kernel/watch_queue.c:remove_watch_list. Destroy is idempotent.
func (wl *WatchList) Destroy() {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if wl.dead {
		return
	}
	wl.dead = true
	old := *wl.watches.Load()
	wl.setLocked(nil)
	for _, w := range old {
		wl.retireLocked(w)
		wl.eng.uncharge(w.cred.UID)
	}
}

// retireLocked unhooks w from its queue and posts the removal record
// (straight to the queue: no filter, no policy, as
// remove_watch_from_object calls post_one_notification directly). If the
// queue is being closed it has already forgotten w, and nothing is posted.
//
// A watch's charge belongs to its place in the list's snapshot: whoever
// takes it out of the snapshot (Remove, Destroy, detach), under wl.mu,
// uncharges it, so it is uncharged exactly once however Close, Remove and
// Destroy race.
//
// Preconditions: wl.mu is held; w is no longer in wl's snapshot.
func (wl *WatchList) retireLocked(w *watch) {
	q := w.queue
	var b [record.RemovalSize]byte
	rec, _ := record.Removal{Tag: record.Tag(w.infoID >> record.InfoIDShift), ID: w.id}.AppendBinary(b[:0])
	tag := rec[5]
	q.mu.Lock()
	found := false
	for i, o := range q.watches {
		if o == w {
			q.watches = append(q.watches[:i], q.watches[i+1:]...)
			found = true
			break
		}
	}
	wake := false
	if found {
		wake = q.postLocked(rec, tag)
	}
	q.mu.Unlock()
	if wake {
		q.notify()
	}
}

// detach removes w from the list without a removal record: its queue is
// being closed. The queue has already forgotten w.
func (wl *WatchList) detach(w *watch) {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	old := *wl.watches.Load()
	for i, o := range old {
		if o == w {
			ws := make([]*watch, 0, len(old)-1)
			ws = append(append(ws, old[:i]...), old[i+1:]...)
			wl.setLocked(ws)
			wl.eng.uncharge(w.cred.UID)
			return
		}
	}
}

// Post delivers rec, generated by generator, to every watch on object id:
// each copy is stamped with the watch's tag, checked against the watch's
// queue filter and then the policy, and queued. Post never blocks and never
// allocates; a full queue loses the record and says so in-band. It returns
// the number of queues the record was queued to (or lost in for lack of
// room).
//
// rec must be one whole record whose length field is len(rec) (8..127
// bytes); anything else is dropped and 0 returned. Like the kernel's
// __post_watch_notification, Post may stamp the tag into rec's info field
// while it runs (restoring it before returning), so rec must not be read
// or posted concurrently by another goroutine.
func (wl *WatchList) Post(rec []byte, generator *Cred, id record.ObjectID) int {
	if len(rec) < record.HeaderSize || len(rec) > record.MaxRecordSize || int(rec[4]&byte(record.InfoLength)) != len(rec) {
		return 0
	}
	ws := *wl.watches.Load()
	if len(ws) == 0 {
		return 0
	}
	h := record.HeaderAt(rec)
	meta := h.Type == record.TypeMeta
	policy := wl.eng.policy
	askPolicy := !meta && !wl.eng.postAlwaysAllowed
	delivered := 0
	for _, w := range ws {
		if w.id != id {
			continue
		}
		q := w.queue
		info := h.Info&^record.InfoID | w.infoID
		if f := q.filter.Load(); f != nil && !meta && !f.Match(h.Type, h.Subtype, info) {
			q.filtered.Add(1)
			continue
		}
		if askPolicy {
			// Stamp the tag in place so the policy sees this watch's
			// copy, as security_post_notification does.
			rec[5] = byte(info >> 8)
			err := policy.PostAllowed(w.cred, generator, record.Record(rec))
			rec[5] = byte(h.Info >> 8)
			if err != nil {
				q.denied.Add(1)
				continue
			}
		}
		q.post(rec, byte(info>>8))
		delivered++
	}
	return delivered
}

// PostLoss reports that n records meant for this object were lost before
// they reached the engine (a socket overrun, ring-buffer drops). Every
// queue watching the object reports the loss in-band, in order: it is
// counted against the newest queued record, or reported first if nothing
// is queued.
func (wl *WatchList) PostLoss(n uint64) {
	if n == 0 {
		return
	}
	seen := make(map[*Queue]bool)
	for _, w := range *wl.watches.Load() {
		q := w.queue
		if seen[q] {
			continue
		}
		seen[q] = true
		q.mu.Lock()
		wake := q.lossLocked(n)
		q.mu.Unlock()
		if wake {
			q.notify()
		}
	}
}
