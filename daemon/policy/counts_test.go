package policy

import (
	"strings"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// TestCounts: through a real engine with the policy as its counter, every
// copy of a record offered to a watch is counted in its record's class
// with its outcome, as the queues count it: posted, lost (full queue),
// filtered, denied; records of no class and meta records are not.
func TestCounts(t *testing.T) {
	rs, err := Parse(strings.NewReader("user=1001 watch=usb,block-lifecycle\nuser=1002 watch=usb\n"), "test.conf", stubLookup)
	if err != nil {
		t.Fatal(err)
	}
	p := New(rs)
	eng := watchq.NewEngine(watchq.Config{Policy: p, Counter: p})
	wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindDevices})
	a, b := &watchq.Cred{UID: 1001, GID: 1001}, &watchq.Cred{UID: 1002, GID: 1002}
	qa, qb := watchq.NewQueue(), watchq.NewQueue()
	if _, err := qa.SetSize(32); err != nil {
		t.Fatal(err)
	}
	if _, err := qb.SetSize(32); err != nil {
		t.Fatal(err)
	}
	// qb keeps only USB records.
	fb, err := record.NewFilter(record.FilterEntry{Type: record.TypeUSB, Subtypes: record.SubtypeSet(1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := qb.SetFilter(fb); err != nil {
		t.Fatal(err)
	}
	if err := wl.Add(qa, 0, 1, a); err != nil {
		t.Fatal(err)
	}
	if err := wl.Add(qb, 0, 2, b); err != nil {
		t.Fatal(err)
	}
	usb, blk, life := rec(record.TypeUSB, 1), rec(record.TypeBlock, 1), rec(record.TypeBlock, 0x80)
	wl.Post(usb, watchq.SystemCred, 0)  // a posted, b posted
	wl.Post(blk, watchq.SystemCred, 0)  // a denied, b filtered
	wl.Post(life, watchq.SystemCred, 0) // a posted, b filtered
	for range 31 {                      // a: 30 more fit, then 1 lost; b: 31 more fit
		wl.Post(usb, watchq.SystemCred, 0)
	}
	want := [NumClasses]ClassCount{
		ClassUSB:            {Posted: 1 + 30 + 1 + 31, Lost: 1},
		ClassBlockErrors:    {Denied: 1, Filtered: 1},
		ClassBlockLifecycle: {Posted: 1, Filtered: 1},
	}
	if got := p.Counts(); got != want {
		t.Errorf("Counts() = %+v\nwant       %+v", got, want)
	}
	// The per-queue figures add up to the same.
	sa, sb := qa.Stats(), qb.Stats()
	var sum ClassCount
	for _, c := range p.Counts() {
		sum.Posted, sum.Lost, sum.Filtered, sum.Denied = sum.Posted+c.Posted, sum.Lost+c.Lost, sum.Filtered+c.Filtered, sum.Denied+c.Denied
	}
	if q := (ClassCount{sa.Posted + sb.Posted, sa.Lost + sb.Lost, sa.Filtered + sb.Filtered, sa.Denied + sb.Denied}); sum != q {
		t.Errorf("class sums %+v, queue sums %+v", sum, q)
	}
	// Records of no class and meta records are not counted.
	wl.Post(rec(record.TypeKey, 0), watchq.SystemCred, 0)
	wl.PostLoss(3)
	if got := p.Counts(); got != want {
		t.Errorf("after a key record and a loss: Counts() = %+v", got)
	}
	h := record.HeaderAt(usb)
	if n := testing.AllocsPerRun(100, func() { p.CountPost(h, watchq.PostQueued) }); n != 0 {
		t.Errorf("CountPost allocates %v times", n)
	}
}

// BenchmarkPost measures what counting by class costs on the post path:
// one watch, Post with the policy as the engine's counter beside Post
// without one, in the same run. Run with -count and compare with
// benchstat.
func BenchmarkPost(b *testing.B) {
	rs, err := Parse(strings.NewReader("user=1001 watch=usb,block-errors\n"), "bench.conf", stubLookup)
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name    string
		counted bool
	}{{"variant=uncounted", false}, {"variant=counted", true}} {
		b.Run(v.name, func(b *testing.B) {
			p := New(rs)
			cfg := watchq.Config{Policy: p}
			if v.counted {
				cfg.Counter = p
			}
			eng := watchq.NewEngine(cfg)
			wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindDevices})
			w := &watchq.Cred{UID: 1001, GID: 1001}
			q := watchq.NewQueue()
			q.SetSize(32)
			wl.Add(q, 0, 1, w)
			r := rec(record.TypeBlock, 1)
			for b.Loop() {
				wl.Post(r, watchq.SystemCred, 0) // the queue fills, then loses: a steady state
			}
		})
	}
}
