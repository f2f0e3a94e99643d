package policy

import (
	"strings"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// TestCounts: every post decision is counted in its record's class, and
// records of no class are not.
func TestCounts(t *testing.T) {
	rs, err := Parse(strings.NewReader("user=1001 watch=usb,0x800001 publish=0x800001\n"), "test.conf", stubLookup)
	if err != nil {
		t.Fatal(err)
	}
	p := New(rs)
	w := &watchq.Cred{UID: 1001, GID: 1001}
	other := &watchq.Cred{UID: 1002, GID: 1002}
	for _, d := range []struct {
		w   *watchq.Cred
		rec record.Record
	}{
		{w, rec(record.TypeUSB, 1)},            // usb allowed
		{other, rec(record.TypeUSB, 1)},        // usb denied
		{w, rec(record.TypeBlock, 1)},          // block error denied
		{w, rec(record.TypeBlock, 0x80)},       // lifecycle denied
		{w, rec(record.Type(0x800001), 0)},     // publisher allowed
		{other, rec(record.Type(0x800001), 0)}, // publisher denied
		{w, rec(record.TypeKey, 0)},            // no class: refused, not counted
	} {
		p.PostAllowed(d.w, w, d.rec)
	}
	want := [NumClasses]ClassCount{ClassUSB: {1, 1}, ClassBlockErrors: {0, 1}, ClassBlockLifecycle: {0, 1}, ClassPublisher: {1, 1}}
	if got := p.Counts(); got != want {
		t.Errorf("Counts() = %+v, want %+v", got, want)
	}
	r := rec(record.TypeUSB, 1)
	if n := testing.AllocsPerRun(100, func() { p.PostAllowed(w, w, r) }); n != 0 {
		t.Errorf("PostAllowed allocates %v times", n)
	}
}

// BenchmarkPostAllowed measures what counting costs on the post path:
// PostAllowed (decide and count) beside postAllowed (decide only), in
// the same run. Run alternately with -count and compare with benchstat.
func BenchmarkPostAllowed(b *testing.B) {
	rs, err := Parse(strings.NewReader("user=1001 watch=usb,block-errors\n"), "bench.conf", stubLookup)
	if err != nil {
		b.Fatal(err)
	}
	p := New(rs)
	w := &watchq.Cred{UID: 1001, GID: 1001}
	r := rec(record.TypeBlock, 1)
	b.Run("variant=uncounted", func(b *testing.B) {
		for b.Loop() {
			p.postAllowed(w, watchq.SystemCred, r)
		}
	})
	b.Run("variant=counted", func(b *testing.B) {
		for b.Loop() {
			p.PostAllowed(w, watchq.SystemCred, r)
		}
	})
}
