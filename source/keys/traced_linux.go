//go:build linux

package keys

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/bpfring"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys/internal/keytrace"
)

// tracedBackend turns the key operations every process makes, traced at
// the system calls (keytrace), into the records the kernel would post, and
// polls for what system calls do not show: garbage collection (the removal
// record), expiry, changes made inside the kernel. docs/keys.md has the
// table.
type tracedBackend struct {
	s   *Source
	tr  *keytrace.Tracer
	pid uint32

	cookie  atomic.Uint64
	wmu     sync.Mutex
	waiters map[uint64]chan struct{} // Sync markers in flight. Guarded by wmu.

	kick chan chan struct{} // Sync's poll passes

	// Guarded by Source.mu.
	recs     []record.KeyNotification
	reported uint64                   // ring drops reported in-band
	userns   uint64                   // this process's user namespace, from its markers
	pending  map[int32]uint64         // new watches: records start after this marker
	members  map[int32]map[int32]bool // watched keyrings' contents at the relay's position (nil: unreadable)
	touched  map[int32]uint64         // serial → pass generation of its last traced record
	snapGen  map[int32]uint64         // serial → pass generation its poll picture is from
	gen      uint64                   // poll passes started
	userKeys map[uint64]int32         // uid<<1|session → @u/@us serial (0: cannot resolve)

	// The poll side; scanMu serialises passes and guards sc, list, out and
	// the entries' snapshots. Lock order: scanMu, then Source.mu.
	scanMu sync.Mutex
	sc     scanner
	list   []*entry
	out    []record.KeyNotification
}

func newTracedBackend(s *Source) (*tracedBackend, error) {
	tr, err := keytrace.Open(keytrace.Config{})
	if err != nil {
		return nil, err
	}
	return &tracedBackend{
		s: s, tr: tr, pid: uint32(os.Getpid()),
		waiters: make(map[uint64]chan struct{}), kick: make(chan chan struct{}),
		pending: make(map[int32]uint64), members: make(map[int32]map[int32]bool),
		touched: make(map[int32]uint64), snapGen: make(map[int32]uint64), userKeys: make(map[uint64]int32),
		sc: newScanner(maphash.MakeSeed()),
	}, nil
}

// add starts a watch. Source.Watch has made the kernel's View check in the
// caller's context; the watch begins at a marker: records of calls that
// returned before it are not the watch's, as a kernel watch placed now
// would not see them. Then the key's first picture, for the poll side.
func (b *tracedBackend) addLocked(e *entry) error {
	c := b.cookie.Add(1)
	if err := b.tr.Marker(c); err != nil {
		return err
	}
	b.pending[e.serial] = c
	sc := newScanner(b.sc.seed)
	if e.as != nil {
		// A watch for another process (WatchAs): the keyring's
		// contents, for add_key's update-or-create (Existed), as its
		// watcher may read them; this process may not.
		if err := runAs(e.as, func(_, _ int32) error { sc.scan([]*entry{e}); return nil }); err != nil {
			return err
		}
	} else {
		sc.scan([]*entry{e})
	}
	e.snap = e.next
	e.snap.members = append([]int32(nil), e.next.members...)
	e.next = snapshot{}
	b.snapGen[e.serial] = b.gen
	b.setMembers(e.serial, &e.snap)
	return nil
}

// setMembers takes a keyring's contents from a picture.
func (b *tracedBackend) setMembers(serial int32, sn *snapshot) {
	if !sn.keyring || !sn.membersOK {
		b.members[serial] = nil
		return
	}
	m := make(map[int32]bool, len(sn.members))
	for _, k := range sn.members {
		m[k] = true
	}
	b.members[serial] = m
}

func (b *tracedBackend) removeLocked(e *entry) { b.forgetLocked(e.serial) }

// forgetLocked drops what the backend holds about serial. Source.mu must be held.
func (b *tracedBackend) forgetLocked(serial int32) {
	delete(b.pending, serial)
	delete(b.members, serial)
	delete(b.touched, serial)
	delete(b.snapGen, serial)
}

func (b *tracedBackend) run() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.pollLoop()
	}()
	b.relay()
	<-done
}

// relay reads the tracer's events in order and posts their records.
func (b *tracedBackend) relay() {
	var ev keytrace.Event
	for {
		if err := b.tr.Read(&ev); err != nil {
			if errors.Is(err, watchq.ErrClosed) {
				return
			}
			continue // a malformed event: never from our programs
		}
		b.handle(&ev)
	}
}

// handle posts the records of one event.
func (b *tracedBackend) handle(ev *keytrace.Event) {
	s := b.s
	s.mu.Lock()
	b.lossToLocked(ev.Drops)
	if ev.Kind == keytrace.KindMarker {
		if ev.TGID == b.pid {
			b.userns = ev.UserNS
			for serial, c := range b.pending {
				if ev.Cookie() >= c {
					delete(b.pending, serial)
				}
			}
		}
		s.mu.Unlock()
		if ev.TGID == b.pid {
			b.wmu.Lock()
			if ch := b.waiters[ev.Cookie()]; ch != nil {
				close(ch)
				delete(b.waiters, ev.Cookie())
			}
			b.wmu.Unlock()
		}
		return
	}
	defer s.mu.Unlock()
	b.recs = ev.Records(b, b.recs[:0])
	for _, n := range b.recs {
		serial := int32(n.KeyID)
		e := s.entries[serial]
		if e == nil || e.dead {
			continue
		}
		if _, ok := b.pending[serial]; ok {
			continue
		}
		s.postLocked(e, n)
		b.touched[serial] = b.gen
		if m := b.members[serial]; m != nil {
			switch n.Subtype {
			case record.KeyLinked:
				m[int32(n.Aux)] = true
			case record.KeyUnlinked:
				delete(m, int32(n.Aux))
			case record.KeyCleared:
				clear(m)
			}
		}
		if e.wl.Len() == 0 {
			s.dropLocked(e) // every queue watching it was closed
		}
	}
}

// lossToLocked reports ring drops up to total in-band: every watched key's list
// loses them, as the kernel's loss record does not say whose records were
// lost. Source.mu must be held.
func (b *tracedBackend) lossToLocked(total uint64) {
	if total <= b.reported {
		return
	}
	n := total - b.reported
	b.reported = total
	for _, e := range b.s.entries {
		e.wl.PostLoss(n)
	}
}

// UserKeyring resolves @u and @us for a caller (keytrace.Resolver): in this
// process's user namespace only, as that uid's lookup_user_key would. Other
// namespaces cannot be resolved: their records are not posted. Source.mu
// is held.
func (b *tracedBackend) UserKeyring(uid uint32, session bool, userns uint64) int32 {
	if b.userns == 0 || userns != b.userns {
		return 0
	}
	k := uint64(uid) << 1
	if session {
		k |= 1
	}
	if v, ok := b.userKeys[k]; ok {
		return v
	}
	v := userKeyring(uid, session)
	if v != 0 {
		b.userKeys[k] = v
	}
	return v
}

// userKeyring asks the kernel for uid's user (session) keyring: on a thread
// of its own whose real uid (the one look_up_user_keyrings uses) it sets to
// uid; the thread ends with the goroutine. The keyring exists already: the
// traced call that named it looked it up.
func userKeyring(uid uint32, session bool) int32 {
	id := unix.KEY_SPEC_USER_KEYRING
	if session {
		id = unix.KEY_SPEC_USER_SESSION_KEYRING
	}
	ch := make(chan int32, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the changed thread exits
		if uint32(os.Getuid()) != uid {
			if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), ^uintptr(0), ^uintptr(0)); errno != 0 {
				ch <- 0
				return
			}
		}
		s, err := unix.KeyctlGetKeyringID(id, false)
		if err != nil {
			s = 0
		}
		ch <- int32(s)
	}()
	return <-ch
}

// Existed tells add_key's update from its creation (keytrace.Resolver): a
// watched key existed; an updated key is one that was in the keyring
// (find_key_to_update looks only there). Source.mu is held.
func (b *tracedBackend) Existed(key, ring int32) (bool, bool) {
	if e := b.s.entries[key]; e != nil && !e.dead {
		return true, true
	}
	if m := b.members[ring]; m != nil {
		return m[key], true
	}
	return false, false
}

// syncRing returns once every event of a call that returned before it was
// handled: its marker came through. A marker the ring dropped is sent
// again.
func (b *tracedBackend) syncRing(ctx context.Context) error {
	for {
		c := b.cookie.Add(1)
		ch := make(chan struct{})
		b.wmu.Lock()
		b.waiters[c] = ch
		b.wmu.Unlock()
		if err := b.tr.Marker(c); err != nil {
			return err
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ch:
			t.Stop()
			return nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-b.s.stop:
			t.Stop()
			return fmt.Errorf("keys: sync: %w", watchq.ErrClosed)
		}
		b.wmu.Lock()
		delete(b.waiters, c)
		b.wmu.Unlock()
	}
}

func (b *tracedBackend) pollLoop() { passLoop(b.s.stop, b.s.interval, b.kick, b.pass) }

// sync waits until the records of every call that returned before it are
// posted, then runs a poll pass (a key the garbage collector took gets its
// removal record).
func (b *tracedBackend) sync(ctx context.Context) error {
	if err := b.syncRing(ctx); err != nil {
		return err
	}
	return kickPass(ctx, b.s.stop, b.kick)
}

// pass is the poll side: a picture of every watched key, then, once every
// traced call that returned before it is posted, the keys that are gone get
// their removal record, and a change no traced record explains is reported
// as the poll backend would, except that a keyring losing members reports
// nothing (the garbage collector drops the links of dead keys silently, as
// the kernel posts nothing then). A key with traced records since its last
// picture, or any pass while a traced call is in flight, only takes a new
// picture.
func (b *tracedBackend) pass() {
	s := b.s
	b.scanMu.Lock()
	defer b.scanMu.Unlock()
	s.mu.Lock()
	b.gen++
	g := b.gen
	b.list = b.list[:0]
	for _, e := range s.entries {
		b.list = append(b.list, e)
	}
	s.mu.Unlock()
	if len(b.list) == 0 {
		return
	}
	b.sc.scan(b.list)
	busy := b.tr.Busy()
	if err := b.syncRing(context.Background()); err != nil {
		return
	}
	dropped, derr := b.tr.Dropped()

	s.mu.Lock()
	defer s.mu.Unlock()
	if derr == nil {
		b.lossToLocked(dropped)
	}
	for _, e := range b.list {
		if e.dead {
			continue
		}
		if e.wl.Len() == 0 {
			s.dropLocked(e)
			continue
		}
		var snap *snapshot
		var gone bool
		b.out, snap, gone = diff(e.serial, &e.snap, &e.next, b.out[:0])
		if gone {
			s.destroyLocked(e)
			b.forgetLocked(e.serial)
			continue
		}
		if e.next.state == stateHidden {
			// This process may not view it (a WatchAs watch, or View
			// lost): only the traced records say anything about it.
			e.next = snapshot{}
			continue
		}
		_, pending := b.pending[e.serial]
		if busy || pending {
			e.next = snapshot{} // try again next pass
			continue
		}
		explained := b.touched[e.serial] >= b.snapGen[e.serial]
		if snap != &e.snap {
			e.snap, e.next = *snap, snapshot{}
		}
		b.snapGen[e.serial] = g
		if explained {
			continue // the traced records said it; members are the relay's
		}
		for _, n := range b.out {
			if n.Subtype == record.KeyUnlinked || n.Subtype == record.KeyCleared {
				continue
			}
			s.postLocked(e, n)
		}
		b.setMembers(e.serial, &e.snap)
	}
}

func (b *tracedBackend) close() { b.tr.Close() }

// tryTraced is newTracedBackend for Auto's choice; tests replace it.
var tryTraced = newTracedBackend

// openTraced is Auto's choice on a kernel without the facility: Traced if
// its programs load and attach here (root, BTF, the syscall tracepoints),
// else Poll, remembering why for Fallback. A load that failed for a
// passing reason (bpfring.Transient) is an error: it decides nothing.
func (s *Source) openTraced() (Backend, error) {
	tb, err := tryTraced(s)
	if bpfring.Transient(err) {
		// EMFILE, ENOMEM...: says nothing about whether the tracer can
		// run here. Fail rather than poll for the source's life.
		return 0, fmt.Errorf("keys: traced backend: %w", err)
	}
	if err != nil {
		s.fallback = err
		return Poll, nil
	}
	s.impl = tb
	return Traced, nil
}

// Fallback says why an Auto source on a kernel without the facility uses
// the poll backend rather than the traced one; nil otherwise.
func (s *Source) Fallback() error { return s.fallback }
