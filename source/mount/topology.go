package mount

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// entry is one mount the source knows about.
type entry struct {
	id, parent uint64 // parent: 0 or an id outside the table for the namespace root
	oldID      uint32 // the 32-bit id mountinfo shows (0 if unknown)
	mountPoint string // in the namespace, from its root
	dev        uint64 // the superblock, record.KernelDev
	attr       uint64 // Attr* bits
	sbRO       bool   // the superblock is read-only
	gone       bool   // detached, kept while children still name it as parent
	children   int    // entries whose parent is this one
}

// ro reports whether the mount is read-only, by its own attribute or its
// superblock's.
func (e *entry) ro() bool { return e.attr&AttrRdonly != 0 || e.sbRO }

// watchKey names a mount watch: the directory and the mount it is on.
type watchKey struct {
	path string
	mnt  uint64
}

// sbWatch is the watch list of one superblock.
type sbWatch struct {
	dev      uint64
	wl       *watchq.WatchList
	markPath string   // where the FAN_FS_ERROR mark was placed, "" if none
	fsid     [2]int32 // statfs f_fsid, to map error events to dev
}

// counters are the source's statistics, updated by the worker.
type counters struct {
	events, posted, unresolved, overflows, scans atomic.Uint64
}

// topology is the source's picture of the namespace and its watches. Only
// the worker goroutine touches it; what other goroutines read (paths) has
// its own lock.
type topology struct {
	eng   *watchq.Engine
	gen   *watchq.Cred
	stats *counters
	paths *pathIndex

	mounts     map[uint64]*entry // by id
	byOld      map[uint32]*entry // live entries by 32-bit id
	devMounts  map[uint64]int    // live mounts per superblock
	devRO      map[uint64]bool   // superblock read-only, per superblock with live mounts
	unresolved map[uint64]bool   // attached mounts whose details were never known

	watches map[watchKey]*watchq.WatchList
	sbs     map[uint64]*sbWatch

	// onSBGone is told when a superblock's watch list is destroyed (to
	// remove its FAN_FS_ERROR mark). May be nil.
	onSBGone func(*sbWatch)

	buf [record.MaxRecordSize]byte // record scratch
}

func newTopology(eng *watchq.Engine, gen *watchq.Cred, stats *counters, paths *pathIndex) *topology {
	return &topology{
		eng: eng, gen: gen, stats: stats, paths: paths,
		mounts: make(map[uint64]*entry), byOld: make(map[uint32]*entry),
		devMounts: make(map[uint64]int), devRO: make(map[uint64]bool), unresolved: make(map[uint64]bool),
		watches: make(map[watchKey]*watchq.WatchList), sbs: make(map[uint64]*sbWatch),
	}
}

// load fills the table with a snapshot taken at start: no records.
func (t *topology) load(es []entry) {
	for i := range es {
		e := es[i]
		t.insert(&e)
	}
	for _, e := range t.mounts {
		if p := t.mounts[e.parent]; p != nil && p != e {
			p.children++
		}
	}
}

// insert adds e to the table. Its parent's child count is the caller's.
func (t *topology) insert(e *entry) {
	t.mounts[e.id] = e
	if e.oldID != 0 {
		t.byOld[e.oldID] = e
	}
	if t.devMounts[e.dev] == 0 {
		t.devRO[e.dev] = e.sbRO
	}
	t.devMounts[e.dev]++
	t.paths.set(e.id, e.mountPoint)
}

// live returns the live entry with this id, or nil.
func (t *topology) live(id uint64) *entry {
	if e := t.mounts[id]; e != nil && !e.gone {
		return e
	}
	return nil
}

// attach handles a new mount: NEW_MOUNT to the watches rootwards of its
// parent.
func (t *topology) attach(e entry) {
	if t.live(e.id) != nil {
		return // in the start snapshot already
	}
	if old := t.mounts[e.id]; old != nil { // a ghost cannot come back
		t.remove(old)
	}
	ne := &e
	knownDev := t.devMounts[e.dev] > 0
	t.insert(ne)
	if p := t.mounts[ne.parent]; p != nil && p != ne {
		p.children++
	}
	var flags uint32
	if ne.ro() {
		flags |= record.MountFlagNowRO
	}
	t.postMount(record.MountNew, flags, ne.parent, ne.id)
	if knownDev && t.devRO[e.dev] != e.sbRO {
		t.setSBReadonly(e.dev, e.sbRO)
	}
}

// attachUnknown handles a mount that was attached and is gone (or
// otherwise unknowable) before its details could be read: NEW_MOUNT with
// triggered_on 0, to watches on the namespace root only.
func (t *topology) attachUnknown(id uint64) {
	if t.live(id) != nil || t.unresolved[id] {
		return
	}
	t.unresolved[id] = true
	t.stats.unresolved.Add(1)
	t.postMount(record.MountNew, 0, 0, id)
}

// detach handles an unmounted mount: UNMOUNT rootwards of its parent,
// then the removal of every watch on it, and of its superblock's watches
// if it was the superblock's last mount in the namespace.
func (t *topology) detach(id uint64) {
	if t.unresolved[id] {
		delete(t.unresolved, id)
		t.postMount(record.MountUnmount, 0, 0, id)
		return
	}
	e := t.live(id)
	if e == nil {
		return
	}
	t.postMount(record.MountUnmount, 0, e.parent, e.id)
	for k, wl := range t.watches {
		if k.mnt == id {
			delete(t.watches, k)
			wl.Destroy()
		}
	}
	e.gone = true
	if e.oldID != 0 && t.byOld[e.oldID] == e {
		delete(t.byOld, e.oldID)
	}
	t.paths.gone(e.id)
	if t.devMounts[e.dev]--; t.devMounts[e.dev] <= 0 {
		delete(t.devMounts, e.dev)
		delete(t.devRO, e.dev)
		if sw := t.sbs[e.dev]; sw != nil {
			delete(t.sbs, e.dev)
			sw.wl.Destroy()
			if t.onSBGone != nil {
				t.onSBGone(sw)
			}
		}
	}
	if e.children == 0 {
		t.remove(e)
	}
}

// remove forgets a detached entry, and its parent if that was a ghost
// waiting for its last child.
func (t *topology) remove(e *entry) {
	for e != nil {
		delete(t.mounts, e.id)
		if e.oldID != 0 && t.byOld[e.oldID] == e {
			delete(t.byOld, e.oldID)
		}
		p := t.mounts[e.parent]
		if p == nil || p == e {
			return
		}
		p.children--
		if !p.gone || p.children > 0 {
			return
		}
		e = p
	}
}

// move handles a mount moved to newParent at newMP: MOVE_FROM rootwards
// of the old parent, MOVE_TO rootwards of the new one. The mount's
// subtree and the watches in it move along.
func (t *topology) move(id, newParent uint64, newMP string) {
	e := t.live(id)
	if e == nil {
		return
	}
	t.postMount(record.MountMoveFrom, 0, e.parent, id)
	oldMP := e.mountPoint
	if p := t.mounts[e.parent]; p != nil && p != e {
		p.children--
		if p.gone && p.children == 0 {
			t.remove(p)
		}
	}
	e.parent = newParent
	if p := t.mounts[newParent]; p != nil && p != e {
		p.children++
	}
	if oldMP != newMP {
		for _, d := range t.mounts {
			if d == e || t.below(d.id, id) {
				if mp, ok := rebase(d.mountPoint, oldMP, newMP); ok {
					d.mountPoint = mp
					t.paths.set(d.id, mp)
				}
			}
		}
		for k, wl := range t.watches {
			if k.mnt == id || t.below(k.mnt, id) {
				if p, ok := rebase(k.path, oldMP, newMP); ok {
					delete(t.watches, k)
					t.watches[watchKey{p, k.mnt}] = wl
				}
			}
		}
	}
	t.postMount(record.MountMoveTo, 0, newParent, id)
}

// setAttr handles new mount attributes: READONLY when the read-only bit
// flipped, SETATTR when another one did.
func (t *topology) setAttr(id uint64, attr uint64) {
	e := t.live(id)
	if e == nil || e.attr == attr {
		return
	}
	changed := e.attr ^ attr
	e.attr = attr
	var ro uint32
	if attr&AttrRdonly != 0 {
		ro = record.MountFlagNowRO
	}
	if changed&AttrRdonly != 0 {
		t.postMount(record.MountReadonly, ro, id, 0)
	}
	if changed&^AttrRdonly != 0 {
		t.postMount(record.MountSetattr, ro, id, 0)
	}
}

// setSBReadonly handles a superblock going read-only or read-write.
func (t *topology) setSBReadonly(dev uint64, ro bool) {
	if t.devMounts[dev] == 0 || t.devRO[dev] == ro {
		return
	}
	t.devRO[dev] = ro
	for _, e := range t.mounts {
		if e.dev == dev && !e.gone {
			e.sbRO = ro
		}
	}
	var flags uint32
	if ro {
		flags = record.SuperblockFlagNowRO
	}
	t.postSB(record.SuperblockNotification{Subtype: record.SuperblockReadonly, Flags: flags, SBID: dev})
}

// fsError posts a filesystem error on dev.
func (t *topology) fsError(dev uint64, errno, count uint32) {
	t.postSB(record.SuperblockNotification{Subtype: record.SuperblockError, SBID: dev, ErrorNumber: errno, ErrorCookie: count})
}

func (t *topology) postSB(n record.SuperblockNotification) {
	sw := t.sbs[n.SBID]
	if sw == nil {
		return
	}
	rec, _ := n.AppendBinary(t.buf[:0])
	sw.wl.Post(rec, t.gen, record.ObjectID(n.SBID))
	t.stats.posted.Add(1)
}

// postMount posts a mount record to the watches on the directories
// rootwards of the change (post_mount_notification): a watch on directory
// W of mount M gets it when M is trigger or one of trigger's ancestors and
// W is at or above the mount point of the mount the record is about — aux
// when there is one (a new, unmounted or moved mount), else trigger —
// with IN_SUBTREE unless W is trigger's own root. (The patches walked from
// trigger's root, so a watch on a plain directory of the parent, between
// its root and the new mount, missed new mounts, unmounts and moves below
// it; watchq delivers those too.) A trigger the table does not hold (0:
// not known) reaches only the watches on "/", with IN_SUBTREE.
func (t *topology) postMount(sub uint8, flags uint32, trigger, aux uint64) {
	if len(t.watches) == 0 {
		return
	}
	n := record.MountNotification{Subtype: sub, TriggeredOn: trigger, Aux: aux}
	te := t.mounts[trigger]
	at := ""
	if te != nil {
		at = te.mountPoint
		if ae := t.mounts[aux]; ae != nil && aux != 0 {
			at = ae.mountPoint
		}
	}
	posted := false
	for k, wl := range t.watches {
		f := flags
		if te == nil {
			if k.path != "/" {
				continue
			}
			f |= record.MountFlagInSubtree
		} else {
			if !hasPathPrefix(at, k.path) || !t.onChain(k.mnt, trigger) {
				continue
			}
			if k.mnt != trigger || k.path != te.mountPoint {
				f |= record.MountFlagInSubtree
			}
		}
		n.Flags = f
		rec, _ := n.AppendBinary(t.buf[:0])
		wl.Post(rec, t.gen, record.ObjectID(k.mnt))
		posted = true
	}
	if posted {
		t.stats.posted.Add(1)
	}
}

// onChain reports whether m is id or one of its ancestors.
func (t *topology) onChain(m, id uint64) bool {
	for range 4096 { // the kernel bounds a namespace's depth far below this
		if id == m {
			return true
		}
		e := t.mounts[id]
		if e == nil || e.parent == id {
			return false
		}
		id = e.parent
	}
	return false
}

// below reports whether id is a descendant of anc.
func (t *topology) below(id, anc uint64) bool {
	e := t.mounts[id]
	return e != nil && e.parent != id && t.onChain(anc, e.parent)
}

// hasPathPrefix reports whether dir is p or one of its ancestors, by
// whole components.
func hasPathPrefix(p, dir string) bool {
	if dir == "/" || p == dir {
		return true
	}
	return strings.HasPrefix(p, dir) && len(p) > len(dir) && p[len(dir)] == '/'
}

// rebase replaces the leading from of p by to.
func rebase(p, from, to string) (string, bool) {
	if !hasPathPrefix(p, from) {
		return p, false
	}
	rest := p[len(from):]
	if from == "/" {
		rest = p[1:]
		if rest == "" {
			return to, true
		}
		rest = "/" + rest
	}
	if to == "/" {
		if rest == "" {
			return "/", true
		}
		return rest, true
	}
	return to + rest, true
}

// pathIndex maps mount ids to mount points for display, including
// recently detached mounts (so an UNMOUNT record read later still shows
// where the mount was). Safe for concurrent use.
type pathIndex struct {
	mu       sync.RWMutex
	live     map[uint64]string
	departed map[uint64]string
	fifo     []uint64 // gone ids, oldest first
}

// maxGone bounds the detached mounts whose paths are remembered.
const maxGone = 4096

func newPathIndex() *pathIndex {
	return &pathIndex{live: make(map[uint64]string), departed: make(map[uint64]string)}
}

func (x *pathIndex) set(id uint64, p string) {
	x.mu.Lock()
	x.live[id] = p
	x.mu.Unlock()
}

func (x *pathIndex) gone(id uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, ok := x.live[id]
	if !ok {
		return
	}
	delete(x.live, id)
	if len(x.fifo) >= maxGone {
		delete(x.departed, x.fifo[0])
		x.fifo = x.fifo[1:]
	}
	x.departed[id] = p
	x.fifo = append(x.fifo, id)
}

func (x *pathIndex) lookup(id uint64) (string, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if p, ok := x.live[id]; ok {
		return p, true
	}
	p, ok := x.departed[id]
	return p, ok
}
