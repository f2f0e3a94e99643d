package watchq

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"

	"github.com/watchq/watchq/record"
)

// TestFanout: one post reaches every queue watching the object, each copy
// with its own tag, and only those.
func TestFanout(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindKey})
	var qs []*Queue
	for i := range 8 {
		q := newSized(t, 32)
		if err := wl.Add(q, 100, record.Tag(10+i), CurrentCred()); err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	other := newSized(t, 32)
	_ = wl.Add(other, 200, 1, CurrentCred()) // another object on the same list
	if n := wl.Post(keyRec(record.KeyLinked, 100, 5), SystemCred, 100); n != 8 {
		t.Errorf("Post reached %d queues, want 8", n)
	}
	for i, q := range qs {
		got := drain(t, q)
		if len(got) != 1 || got[0].Tag() != record.Tag(10+i) {
			t.Errorf("queue %d got %v", i, got)
		}
	}
	if got := drain(t, other); len(got) != 0 {
		t.Errorf("queue watching another object got %v", got)
	}
	// The poster's buffer is unchanged.
	rec := keyRec(record.KeyLinked, 100, 5)
	wl.Post(rec, SystemCred, 100)
	if record.Record(rec).Tag() != 0 {
		t.Errorf("Post left tag %d in the caller's record", record.Record(rec).Tag())
	}
}

func TestWatchErrors(t *testing.T) {
	e := NewEngine(Config{MaxWatchesPerUser: 3})
	wl := e.NewWatchList(Object{Kind: KindKey})
	q := newSized(t, 32)
	me := &Cred{UID: 1000, GID: 1000}
	if err := wl.Add(q, 1, 0, me); err != nil {
		t.Fatal(err)
	}
	if err := wl.Add(q, 1, 5, me); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("duplicate watch: %v, want EBUSY", err)
	}
	_ = wl.Add(q, 2, 0, me)
	_ = wl.Add(newSized(t, 32), 1, 0, me)
	if err := wl.Add(q, 4, 0, me); !errors.Is(err, syscall.EAGAIN) || !errors.Is(err, ErrTooManyWatches) {
		t.Errorf("fourth watch: %v, want EAGAIN", err)
	}
	if err := wl.Add(q, 4, 0, &Cred{UID: 1001}); err != nil {
		t.Errorf("other user's watch: %v", err)
	}
	if err := wl.Remove(q, 99); !errors.Is(err, ebadslt) || !errors.Is(err, ErrNoWatch) {
		t.Errorf("removing a missing watch: %v, want EBADSLT", err)
	}
	if err := wl.Remove(q, 2); err != nil {
		t.Fatal(err)
	}
	if err := wl.Add(q, 5, 0, me); err != nil {
		t.Errorf("watch after a removal freed the slot: %v", err)
	}
	dead := newSized(t, 32)
	dead.Close()
	if err := wl.Add(dead, 9, 0, &Cred{UID: 7}); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("watch on a closed queue: %v, want ENOENT", err)
	}
	if e.Watches(7) != 0 {
		t.Error("failed Add left a charge")
	}
	wl.Destroy()
	if err := wl.Add(q, 10, 0, &Cred{UID: 7}); !errors.Is(err, ErrListDead) {
		t.Errorf("watch on a destroyed object: %v", err)
	}
	if e.Watches(1000) != 0 || e.Watches(1001) != 0 {
		t.Errorf("Destroy left charges: %d %d", e.Watches(1000), e.Watches(1001))
	}
}

// TestRemovalRecords: explicit removal and destruction post removal
// records, 16 bytes with the id or 8 bytes for id 0, bypassing the filter.
func TestRemovalRecords(t *testing.T) {
	e := NewEngine(Config{})
	keys := e.NewWatchList(Object{Kind: KindKey})
	devs := e.NewWatchList(Object{Kind: KindDevices})
	q := newSized(t, 32)
	f, _ := record.NewFilter(record.FilterEntry{Type: record.TypeUSB, Subtypes: record.AllSubtypes})
	_ = q.SetFilter(f) // removal records are not filtered
	_ = keys.Add(q, 0x1234, 1, CurrentCred())
	_ = keys.Add(q, 0x5678, 2, CurrentCred())
	_ = devs.Add(q, 0, 3, CurrentCred())
	if err := keys.Remove(q, 0x1234); err != nil {
		t.Fatal(err)
	}
	if err := devs.Remove(q, 0); err != nil {
		t.Fatal(err)
	}
	keys.Destroy()
	keys.Destroy() // idempotent
	got := drain(t, q)
	want := []record.Removal{{Tag: 1, ID: 0x1234}, {Tag: 3}, {Tag: 2, ID: 0x5678}}
	wantLen := []int{16, 8, 16}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		m, err := r.Removal()
		if err != nil || m != want[i] || len(r) != wantLen[i] {
			t.Errorf("record %d: %+v (%d bytes) %v; want %+v (%d bytes)", i, m, len(r), err, want[i], wantLen[i])
		}
	}
}

// TestFilterAfterTag: the filter sees the stamped tag, and filtered-out
// records use no queue space.
func TestFilterAfterTag(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindKey})
	q := newSized(t, 32)
	f, _ := record.NewFilter(record.FilterEntry{Type: record.TypeKey, Subtypes: record.AllSubtypes, InfoMask: record.InfoID, InfoFilter: 2 << 8})
	_ = q.SetFilter(f)
	_ = wl.Add(q, 1, 1, CurrentCred())
	_ = wl.Add(q, 2, 2, CurrentCred())
	for range 1000 {
		wl.Post(keyRec(record.KeyUpdated, 1, 0), SystemCred, 1) // tag 1: filtered
	}
	wl.Post(keyRec(record.KeyUpdated, 2, 0), SystemCred, 2) // tag 2: passes
	got := drain(t, q)
	if len(got) != 1 || got[0].Tag() != 2 {
		t.Fatalf("got %v", got)
	}
	if s := q.Stats(); s.Filtered != 1000 || s.Lost != 0 {
		t.Errorf("stats %+v: filtered records must not use space", s)
	}
	_ = q.SetFilter(nil)
	wl.Post(keyRec(record.KeyUpdated, 1, 0), SystemCred, 1)
	if got := drain(t, q); len(got) != 1 {
		t.Errorf("after removing the filter got %v", got)
	}
}

// spyPolicy records every hook call.
type spyPolicy struct {
	mu      sync.Mutex
	watches []string
	posts   []string
	deny    func(w, g *Cred) bool
}

func (p *spyPolicy) WatchAllowed(w *Cred, o Object) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watches = append(p.watches, fmt.Sprintf("%d:%v:%d", w.UID, o.Kind, o.ID))
	if p.deny != nil && p.deny(w, nil) {
		return &PermissionError{Op: "watch", Reason: "spy says no"}
	}
	return nil
}

func (p *spyPolicy) PostAllowed(w, g *Cred, r record.Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.posts = append(p.posts, fmt.Sprintf("%d<-%d:%v:tag%d", w.UID, g.UID, r.Type(), r.Tag()))
	if p.deny != nil && p.deny(w, g) {
		return &PermissionError{Op: "post", Reason: "spy says no"}
	}
	return nil
}

// TestPolicyConsulted: WatchAllowed on every Add, PostAllowed on every
// delivery (after tag stamping and filtering), never for meta records.
func TestPolicyConsulted(t *testing.T) {
	spy := &spyPolicy{deny: func(w, g *Cred) bool { return w.UID == 66 }}
	e := NewEngine(Config{Policy: spy})
	wl := e.NewWatchList(Object{Kind: KindDevices})
	a, b, c := newSized(t, 32), newSized(t, 32), newSized(t, 32)
	if err := wl.Add(a, 0, 1, &Cred{UID: 10}); err != nil {
		t.Fatal(err)
	}
	if err := wl.Add(b, 0, 2, &Cred{UID: 11}); err != nil {
		t.Fatal(err)
	}
	if err := wl.Add(c, 0, 3, &Cred{UID: 66}); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("denied watch: %v, want EACCES", err)
	}
	f, _ := record.NewFilter(record.FilterEntry{Type: record.TypeUSB, Subtypes: record.AllSubtypes})
	_ = b.SetFilter(f)
	usb, _ := record.USBNotification{Name: "1-1"}.AppendBinary(nil)
	blk, _ := record.BlockNotification{Subtype: record.BlockErrorIO}.AppendBinary(nil)
	wl.Post(usb, &Cred{UID: 5}, 0)
	wl.Post(blk, &Cred{UID: 5}, 0) // filtered for b: policy not asked for b
	wl.PostLoss(1)
	_ = wl.Remove(a, 0) // removal record: meta, policy not asked
	wl.Destroy()
	if want := []string{"10:devices:0", "11:devices:0", "66:devices:0"}; !equal(spy.watches, want) {
		t.Errorf("WatchAllowed calls %v, want %v", spy.watches, want)
	}
	if want := []string{"10<-5:usb:tag1", "11<-5:usb:tag2", "10<-5:block:tag1"}; !equal(spy.posts, want) {
		t.Errorf("PostAllowed calls %v, want %v", spy.posts, want)
	}
	// A denied post reaches no queue and is counted.
	spy.deny = func(w, g *Cred) bool { return g != nil && g.UID == 99 }
	d := newSized(t, 32)
	_ = e.NewWatchList(Object{Kind: KindKey}).Add(d, 1, 0, &Cred{UID: 1})
	wl2 := e.NewWatchList(Object{Kind: KindKey})
	_ = wl2.Add(d, 1, 0, &Cred{UID: 1})
	wl2.Post(keyRec(record.KeyUpdated, 1, 0), &Cred{UID: 99}, 1)
	if got := drain(t, d); len(got) != 0 || d.Stats().Denied != 1 {
		t.Errorf("denied post delivered %v (stats %+v)", got, d.Stats())
	}
}

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy{}
	obj := Object{Kind: KindPublisher, UID: 1000, GID: 100, Mode: 0o440}
	for _, tc := range []struct {
		c    Cred
		want bool
	}{
		{Cred{UID: 0}, true},
		{Cred{UID: 1000, GID: 5}, true},
		{Cred{UID: 1001, GID: 100}, true},
		{Cred{UID: 1001, GID: 5, Groups: []uint32{100}}, true},
		{Cred{UID: 1001, GID: 5}, false},
	} {
		err := p.WatchAllowed(&tc.c, obj)
		if (err == nil) != tc.want || (err != nil && !errors.Is(err, syscall.EACCES)) {
			t.Errorf("%+v: %v, want allowed=%v", tc.c, err, tc.want)
		}
	}
	if err := p.WatchAllowed(&Cred{UID: 5}, Object{Kind: KindDevices}); err != nil {
		t.Errorf("mode 0 object: %v", err)
	}
	// Keys: the kernel's view check (possession included) is the DAC.
	if err := p.WatchAllowed(&Cred{UID: 5}, Object{Kind: KindKey, UID: 1, Mode: 0o1000}); err != nil {
		t.Errorf("key: %v", err)
	}
}

func TestLabelPolicy(t *testing.T) {
	p := NewLabelPolicy()
	if err := p.ParseRules("# comment\nAdmin Secret r\nSensor App w\n"); err != nil {
		t.Fatal(err)
	}
	if err := p.ParseRules("Bad line"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("bad rule: %v", err)
	}
	for _, tc := range []struct {
		subject, object string
		want            Access
	}{
		{"Admin", "Secret", AccessRead},
		{"App", "Secret", 0},
		{"App", "App", AccessRead | AccessWrite},
		{"App", "_", AccessRead},
		{"App", "", AccessRead},
		{"^", "Secret", AccessRead},
		{"App", "*", AccessRead | AccessWrite},
		{"@", "Secret", AccessRead | AccessWrite},
		{"Sensor", "App", AccessWrite},
	} {
		if got := p.Access(tc.subject, tc.object); got != tc.want {
			t.Errorf("Access(%q, %q) = %b, want %b", tc.subject, tc.object, got, tc.want)
		}
	}
	// Through the engine: watch needs read on the object, a post needs
	// write from generator to watcher; meta always passes.
	e := NewEngine(Config{Policy: p})
	wl := e.NewWatchList(Object{Kind: KindKey, Label: "Secret"})
	if err := wl.Add(newSized(t, 32), 1, 0, &Cred{Label: "App"}); !errors.Is(err, syscall.EACCES) {
		t.Errorf("App watching Secret: %v, want EACCES", err)
	}
	q := newSized(t, 32)
	if err := wl.Add(q, 1, 0, &Cred{Label: "Admin"}); err != nil {
		t.Fatal(err)
	}
	wl.Post(keyRec(record.KeyUpdated, 1, 0), &Cred{Label: "Sensor"}, 1) // Sensor→Admin: no write
	wl.Post(keyRec(record.KeyUpdated, 1, 1), &Cred{Label: "Admin"}, 1)  // same label
	wl.Post(keyRec(record.KeyUpdated, 1, 2), nil, 1)                    // no generator
	wl.Destroy()
	got := drain(t, q)
	if len(got) != 3 || !got[2].IsRemoval() {
		t.Fatalf("got %v", got)
	}
	for i, r := range got[:2] {
		if k, _ := r.Key(); k.Aux != uint32(i+1) {
			t.Errorf("record %d: aux %d", i, k.Aux)
		}
	}
}

// TestCloseDestroyRace races Close, Destroy, Add and Remove against
// concurrent posts; run with -race. Afterwards nothing is charged and
// nothing is delivered to a closed queue.
func TestCloseDestroyRace(t *testing.T) {
	e := NewEngine(Config{})
	for round := range 200 {
		wl := e.NewWatchList(Object{Kind: KindKey})
		var qs []*Queue
		for i := range 8 {
			q := newSized(t, 32)
			_ = wl.Add(q, 1, record.Tag(i), &Cred{UID: uint32(round)})
			qs = append(qs, q)
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Go(func() {
				rec := keyRec(record.KeyUpdated, 1, 0)
				for {
					select {
					case <-stop:
						return
					default:
						wl.Post(rec, SystemCred, 1)
						wl.PostLoss(1)
					}
				}
			})
		}
		wg.Go(func() {
			for _, q := range qs[:4] {
				q.Close()
			}
		})
		wg.Go(func() {
			for _, q := range qs[4:6] {
				_ = wl.Remove(q, 1)
			}
			q := newSized(t, 32)
			_ = wl.Add(q, 2, 0, &Cred{UID: uint32(round)})
			q.Close()
		})
		wg.Go(func() { wl.Destroy() })
		wg.Go(func() {
			for _, q := range qs {
				_, _ = q.TryRead(make([]byte, 256))
			}
		})
		wl.Destroy()
		close(stop)
		wg.Wait()
		for _, q := range qs {
			q.Close()
		}
		if wl.Len() != 0 || e.Watches(uint32(round)) != 0 {
			t.Fatalf("round %d: %d watches, %d charged", round, wl.Len(), e.Watches(uint32(round)))
		}
		for _, q := range qs[:4] {
			if s := q.Stats(); s.Queued != 0 || !s.Closed {
				t.Fatalf("closed queue holds %+v", s)
			}
		}
	}
}

// yieldPolicy allows everything but yields in PostAllowed, widening the
// window between a poster finding a watch and queueing through it.
type yieldPolicy struct{}

func (yieldPolicy) WatchAllowed(*Cred, Object) error { return nil }

func (yieldPolicy) PostAllowed(_, _ *Cred, _ record.Record) error {
	runtime.Gosched()
	return nil
}

// TestRemoveIsBarrier: a watch's removal record is the last record its
// queue gets through it, even while posts race the Remove.
func TestRemoveIsBarrier(t *testing.T) {
	e := NewEngine(Config{Policy: yieldPolicy{}})
	rec := keyRec(record.KeyUpdated, 1, 0)
	for round := range 300 {
		wl := e.NewWatchList(Object{Kind: KindDevices})
		q := newSized(t, 512)
		if err := wl.Add(q, 0, 7, CurrentCred()); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				b := append([]byte(nil), rec...) // Post stamps its rec
				for range 100 {
					wl.Post(b, SystemCred, 0)
				}
			})
		}
		runtime.Gosched()
		if err := wl.Remove(q, 0); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		got := drain(t, q)
		if len(got) == 0 || !got[len(got)-1].IsRemoval() {
			n := 0
			for i, r := range got {
				if r.IsRemoval() {
					n = len(got) - 1 - i
				}
			}
			t.Fatalf("round %d: %d records after the removal record", round, n)
		}
	}
}

// TestManyObjects: with watches on many objects of one list, a post
// reaches exactly the watches of its object while objects come and go (the
// object table grows and shrinks under it), PostLoss tells each queue once,
// and the list returns to empty.
func TestManyObjects(t *testing.T) {
	const objects = 1000
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindPublisher})
	me := CurrentCred()
	shared := newSized(t, 32) // watches every object
	qs := make([]*Queue, objects)
	for i := range qs {
		qs[i] = NewQueue()
		if err := wl.Add(qs[i], record.ObjectID(i), 1, me); err != nil {
			t.Fatal(err)
		}
		if err := wl.Add(shared, record.ObjectID(i), 2, me); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(wl.table.Load().buckets); n < objects {
		t.Errorf("%d objects in %d buckets", objects, n)
	}
	wl.PostLoss(1)
	if got := drain(t, shared); len(got) != 1 || !got[0].IsLoss() {
		t.Errorf("PostLoss gave a queue with %d watches %v; want one loss record", objects, got)
	}
	rec := keyRec(record.KeyUpdated, 1, 0)
	live := make(map[int]bool)
	for i := range objects {
		live[i] = true
	}
	for _, i := range rand.Perm(objects) {
		if n := wl.Post(rec, SystemCred, record.ObjectID(i)); n != 2 {
			t.Fatalf("post to object %d reached %d queues, want 2", i, n)
		}
		if err := wl.Remove(qs[i], record.ObjectID(i)); err != nil {
			t.Fatal(err)
		}
		if err := wl.Remove(shared, record.ObjectID(i)); err != nil {
			t.Fatal(err)
		}
		delete(live, i)
		if n := wl.Post(rec, SystemCred, record.ObjectID(i)); n != 0 {
			t.Fatalf("post to removed object %d reached %d queues", i, n)
		}
		drain(t, shared)
		if len(live)%97 == 0 { // every object left is still found
			for j := range live {
				if n := wl.Post(rec, SystemCred, record.ObjectID(j)); n != 2 {
					t.Fatalf("with %d objects left, post to %d reached %d queues", len(live), j, n)
				}
			}
			drain(t, shared)
		}
	}
	if wl.Len() != 0 || e.Watches(me.UID) != 0 || len(wl.chains) != 0 || len(wl.byKey) != 0 || len(wl.queues) != 0 {
		t.Errorf("emptied list: %d watches, %d charged, %d chains, %d keys, %d queues",
			wl.Len(), e.Watches(me.UID), len(wl.chains), len(wl.byKey), len(wl.queues))
	}
	if n := len(wl.table.Load().buckets); n > 4 {
		t.Errorf("emptied list keeps %d buckets", n)
	}
	if s := shared.Stats(); s.Watches != 0 {
		t.Errorf("queue still counts %d watches", s.Watches)
	}
}

// TestPostWhileObjectsChange: posts to an object watched throughout always
// find it while other objects are added and dropped around it and the
// object table is rebuilt under the posters; run with -race.
func TestPostWhileObjectsChange(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindPublisher})
	me := CurrentCred()
	const stable = 1 << 40
	q := NewQueue() // unsized: posts are counted, nothing piles up
	if err := wl.Add(q, stable, 0, me); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	misses := make(chan int, 2)
	for range 2 {
		wg.Go(func() {
			rec := keyRec(record.KeyUpdated, 1, 0)
			missed := 0
			for {
				select {
				case <-stop:
					misses <- missed
					return
				default:
				}
				if wl.Post(rec, SystemCred, stable) != 1 {
					missed++
				}
			}
		})
	}
	others := make([]*Queue, 64)
	for i := range others {
		others[i] = NewQueue()
	}
	for round := range 50 {
		for i, o := range others { // 64 objects come: the table grows
			if err := wl.Add(o, record.ObjectID(round*64+i), 0, me); err != nil {
				t.Fatal(err)
			}
		}
		for i, o := range others { // and go: it shrinks
			if err := wl.Remove(o, record.ObjectID(round*64+i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if m := <-misses + <-misses; m != 0 {
		t.Errorf("%d posts missed the object watched throughout", m)
	}
	if wl.Len() != 1 {
		t.Errorf("Len = %d", wl.Len())
	}
}
