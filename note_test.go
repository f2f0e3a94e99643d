package watchq

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/watchq/watchq/record"
)

// sizedRec returns a publisher record of l bytes (12..127) carrying seq.
func sizedRec(l int, seq uint32) []byte {
	b := make([]byte, l)
	record.Header{Type: 0x800011, Subtype: 1, Info: record.MakeInfo(l, 0, 0)}.Put(b)
	binary.LittleEndian.PutUint32(b[8:], seq)
	return b
}

// stream describes what a drain read: "seq" per record, "loss n" per loss
// record.
func stream(t *testing.T, q *Queue) []string {
	t.Helper()
	var out []string
	for _, r := range drain(t, q) {
		if l, err := r.Loss(); err == nil {
			out = append(out, fmt.Sprintf("loss %d", l.Count))
			continue
		}
		out = append(out, fmt.Sprint(binary.LittleEndian.Uint32(r[8:])))
	}
	return out
}

// TestLossCountsInSlot: loss counts kept behind queued records, for every
// record length: each count is reported right after its record, as a loss
// record reports it (saturated at 0xffff, or 0xff behind a 127-byte
// record, which has one free byte), and the next record is queued behind
// it as the kernel queues it.
func TestLossCountsInSlot(t *testing.T) {
	for _, tc := range []struct {
		l    int    // length of the record the loss follows
		lost uint64 // records lost behind it while the queue is full
		want uint64 // the count its loss record reports
	}{
		{16, 1, 1},
		{16, 0xffff, 0xffff},
		{16, 1 << 40, 0xffff},
		{126, 1 << 40, 0xffff}, // 2 free bytes
		{127, 255, 255},        // 1 free byte
		{127, 256, 255},
		{127, 1 << 40, 255},
	} {
		t.Run(fmt.Sprintf("len=%d,lost=%d", tc.l, tc.lost), func(t *testing.T) {
			e := NewEngine(Config{})
			wl := e.NewWatchList(Object{Kind: KindPublisher})
			q := newSized(t, 32)
			if err := wl.Add(q, 1, 0, CurrentCred()); err != nil {
				t.Fatal(err)
			}
			post := func(l int, seq uint32) { wl.Post(sizedRec(l, seq), SystemCred, 1) }
			for i := range 31 {
				post(16, uint32(i))
			}
			post(tc.l, 31) // the newest of a full queue
			post(16, 99)   // lost: the queue is full
			wl.PostLoss(tc.lost - 1)
			buf := make([]byte, 16) // the reader takes record 0
			if n, err := q.TryRead(buf); err != nil || n != 16 {
				t.Fatalf("TryRead = %d, %v", n, err)
			}
			post(16, 32) // behind record 31 and its count
			want := []string{}
			for i := 1; i <= 31; i++ {
				want = append(want, fmt.Sprint(i))
			}
			want = append(want, fmt.Sprintf("loss %d", tc.want), "32")
			if got := stream(t, q); !slices.Equal(got, want) {
				t.Fatalf("read\n%v\nwant\n%v", got, want)
			}
			post(16, 33) // the queue works as before
			if got := stream(t, q); !slices.Equal(got, []string{"33"}) {
				t.Fatalf("after the loss: %v", got)
			}
			s := q.Stats()
			if s.Lost != tc.lost || s.Posted != s.Delivered {
				t.Errorf("stats %+v, want %d lost and every posted record delivered", s, tc.lost)
			}
		})
	}
}

// TestLossCountsInterleaved: several records in the ring carry counts of
// their own at once, each reported after its record, whatever their
// lengths.
func TestLossCountsInterleaved(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindPublisher})
	q := newSized(t, 32)
	if err := wl.Add(q, 1, 0, CurrentCred()); err != nil {
		t.Fatal(err)
	}
	post := func(l int, seq uint32) { wl.Post(sizedRec(l, seq), SystemCred, 1) }
	for i := range 32 {
		post(8+4+i*3, uint32(i)) // lengths 12..105
	}
	var want []string
	for i := range 3 { // three rounds: lose i+1, free one slot, post one
		for range i + 1 {
			post(16, 1000)
		}
		if n, err := q.TryRead(make([]byte, 12+9*i)); err != nil || n == 0 {
			t.Fatalf("TryRead = %d, %v", n, err)
		}
		post(127-i, uint32(100+i))
	}
	for i := 3; i < 32; i++ {
		want = append(want, fmt.Sprint(i))
	}
	want = append(want, "loss 1", "100", "loss 2", "101", "loss 3", "102")
	if got := stream(t, q); !slices.Equal(got, want) {
		t.Fatalf("read\n%v\nwant\n%v", got, want)
	}
}

// heapOf returns the bytes of heap f allocates: the least of several
// rounds of runs calls each, averaged, since MemStats counts the whole
// process and anything else running can only add.
func heapOf(runs int, f func()) uint64 {
	best := uint64(1<<64 - 1)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			f()
		}
		runtime.ReadMemStats(&after)
		best = min(best, (after.TotalAlloc-before.TotalAlloc)/uint64(runs))
	}
	return best
}

// TestQueueHeap: a queue's notes cost no more heap than the kernel's page
// share of a notification pipe, 128 bytes a note (docs/benchmarks.md,
// "Note memory").
func TestQueueHeap(t *testing.T) {
	const notes = 256
	var q *Queue
	ring := heapOf(100, func() {
		q = NewQueue()
		q.SetSize(notes)
	})
	empty := heapOf(100, func() { q = NewQueue() })
	_ = q
	perNote := float64(ring-empty) / notes
	t.Logf("queue of %d notes: %d B of heap (%d B the queue, %.1f B a note)", notes, ring, empty, perNote)
	if perNote > record.NoteSize {
		t.Errorf("%.1f B of heap per note, want at most %d", perNote, record.NoteSize)
	}
}
