package watchq

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/record"
)

func newSized(t testing.TB, n int) *Queue {
	t.Helper()
	q := NewQueue()
	if _, err := q.SetSize(n); err != nil {
		t.Fatal(err)
	}
	return q
}

func keyRec(subtype uint8, key, aux uint32) []byte {
	b, _ := record.KeyNotification{Subtype: subtype, KeyID: key, Aux: aux}.AppendBinary(nil)
	return b
}

// drain reads everything queued, without blocking.
func drain(t testing.TB, q *Queue) []record.Record {
	t.Helper()
	var out []record.Record
	buf := make([]byte, 4096)
	for {
		n, err := q.TryRead(buf)
		if errors.Is(err, ErrWouldBlock) {
			return out
		}
		if err != nil {
			t.Fatalf("TryRead: %v", err)
		}
		for r, err := range record.Records(buf[:n]) {
			if err != nil {
				t.Fatalf("queue returned malformed bytes: %v", err)
			}
			out = append(out, append(record.Record(nil), r...))
		}
	}
}

func TestSetSize(t *testing.T) {
	for _, tc := range []struct {
		req, capacity int
		err           error
	}{
		{1, 32, nil}, {32, 32, nil}, {33, 64, nil}, {100, 128, nil}, {512, 512, nil},
		{0, 0, syscall.EINVAL}, {-1, 0, syscall.EINVAL}, {513, 0, syscall.EINVAL},
	} {
		q := NewQueue()
		c, err := q.SetSize(tc.req)
		if c != tc.capacity || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("SetSize(%d) = %d, %v; want %d, %v", tc.req, c, err, tc.capacity, tc.err)
		}
		if err == nil {
			// watch_queue_set_size checks EBUSY before the range, so
			// even an out-of-range second size is EBUSY.
			for _, again := range []int{tc.req, 0, -1, 513} {
				if _, err := q.SetSize(again); !errors.Is(err, syscall.EBUSY) || !errors.Is(err, ErrSizeSet) {
					t.Errorf("SetSize(%d) on a sized queue: %v, want EBUSY", again, err)
				}
			}
		}
	}
	q := NewQueue(WithMaxNotes(4096))
	if c, err := q.SetSize(4000); err != nil || c != 4000 {
		t.Errorf("explicit larger limit: %d, %v", c, err)
	}
}

// TestOverflow: a 32-note queue, 64 posts, no reader → 32 records, then one
// loss record counting 32, in that order.
func TestOverflow(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindKey})
	q := newSized(t, 32)
	if err := wl.Add(q, 5, 9, CurrentCred()); err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		wl.Post(keyRec(record.KeyUpdated, 5, uint32(i)), SystemCred, 5)
	}
	got := drain(t, q)
	if len(got) != 33 {
		t.Fatalf("read %d records, want 33", len(got))
	}
	for i, r := range got[:32] {
		k, err := r.Key()
		if err != nil || k.Aux != uint32(i) || k.Tag != 9 {
			t.Fatalf("record %d: %+v %v", i, k, err)
		}
	}
	l, err := got[32].Loss()
	if err != nil || l.Count != 32 || len(got[32]) != 8 || got[32].Tag() != 0 {
		t.Fatalf("last record %v: %+v %v; want loss count 32", got[32], l, err)
	}
	if s := q.Stats(); s.Lost != 32 || s.Posted != 32 || s.Delivered != 32 {
		t.Errorf("stats %+v", s)
	}
	// Nothing more; a new record follows normally.
	wl.Post(keyRec(record.KeyRevoked, 5, 0), SystemCred, 5)
	if got := drain(t, q); len(got) != 1 || got[0].Subtype() != record.KeyRevoked {
		t.Errorf("after loss: %v", got)
	}
}

// TestLossOrder: loss is reported right after the record it follows, also
// in the middle of a read, and losses after different records stay apart.
func TestLossOrder(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindDevices})
	q := newSized(t, 1) // 32 notes
	if err := wl.Add(q, 0, 1, CurrentCred()); err != nil {
		t.Fatal(err)
	}
	post := func(i uint32) { wl.Post(keyRec(record.KeyUpdated, 1, i), SystemCred, 0) }
	for i := range 34 { // 2 lost after record 31
		post(uint32(i))
	}
	buf := make([]byte, 16*31) // read 31 records
	if n, err := q.TryRead(buf); err != nil || n != 16*31 {
		t.Fatalf("TryRead = %d, %v", n, err)
	}
	for i := 100; i < 103; i++ { // room for 31 more: no loss
		post(uint32(i))
	}
	got := drain(t, q)
	want := []string{"31", "loss 2", "100", "101", "102"}
	var have []string
	for _, r := range got {
		if l, err := r.Loss(); err == nil {
			have = append(have, "loss "+itoa(int(l.Count)))
			continue
		}
		k, _ := r.Key()
		have = append(have, itoa(int(k.Aux)))
	}
	if !equal(have, want) {
		t.Errorf("got %v, want %v", have, want)
	}
	// Upstream loss on an empty queue comes first; on a non-empty one after
	// the newest record.
	wl.PostLoss(5)
	post(7)
	wl.PostLoss(3)
	post(8)
	have = have[:0]
	for _, r := range drain(t, q) {
		if l, err := r.Loss(); err == nil {
			have = append(have, "loss "+itoa(int(l.Count)))
			continue
		}
		k, _ := r.Key()
		have = append(have, itoa(int(k.Aux)))
	}
	if want := []string{"loss 5", "7", "loss 3", "8"}; !equal(have, want) {
		t.Errorf("upstream loss: got %v, want %v", have, want)
	}
}

// TestUnsizedLosesSilently: until SetSize every record is lost and no loss
// record can appear, also for losses reported upstream (PostLoss).
func TestUnsizedLosesSilently(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindDevices})
	q := NewQueue()
	if err := wl.Add(q, 0, 1, CurrentCred()); err != nil {
		t.Fatal(err)
	}
	wl.PostLoss(3)
	wl.Post(keyRec(record.KeyUpdated, 1, 1), SystemCred, 0)
	if q.Readable() {
		t.Error("an unsized queue is readable")
	}
	if _, err := q.SetSize(32); err != nil {
		t.Fatal(err)
	}
	wl.Post(keyRec(record.KeyUpdated, 1, 2), SystemCred, 0)
	got := drain(t, q)
	if len(got) != 1 || got[0].IsLoss() {
		t.Fatalf("got %v; want the one record posted after SetSize, no loss record", got)
	}
	if k, _ := got[0].Key(); k.Aux != 2 {
		t.Errorf("got %+v", k)
	}
	if s := q.Stats(); s.Lost != 4 || s.Posted != 1 {
		t.Errorf("stats %+v; want 4 lost (3 upstream, 1 posted), 1 posted", s)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadWholeRecords(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindKey})
	q := newSized(t, 32)
	_ = wl.Add(q, 1, 0, CurrentCred())
	for range 3 {
		wl.Post(keyRec(record.KeyUpdated, 1, 0), SystemCred, 1)
	}
	// 40 bytes: two whole records, never a split one.
	buf := make([]byte, 40)
	if n, err := q.TryRead(buf); n != 32 || err != nil {
		t.Errorf("TryRead(40) = %d, %v; want 32, nil", n, err)
	}
	if n, err := q.TryRead(buf[:15]); n != 0 || !errors.Is(err, ErrBufferTooSmall) || !errors.Is(err, syscall.ENOBUFS) {
		t.Errorf("TryRead(15) = %d, %v; want ENOBUFS", n, err)
	}
	// read(2) of 0 bytes returns 0 ("Null read succeeds"), blocking or
	// not, and consumes nothing.
	if n, err := q.TryRead(buf[:0]); n != 0 || err != nil {
		t.Errorf("TryRead(0 bytes) = %d, %v; want 0, nil", n, err)
	}
	if n, err := q.Read(context.Background(), nil); n != 0 || err != nil {
		t.Errorf("Read(0 bytes) = %d, %v; want 0, nil", n, err)
	}
	if n, err := q.TryRead(buf); n != 16 || err != nil {
		t.Errorf("TryRead after ENOBUFS = %d, %v; the record must not be lost", n, err)
	}
	if _, err := q.TryRead(buf); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("empty TryRead: %v, want EAGAIN", err)
	}
	if n, err := q.TryRead(nil); n != 0 || err != nil {
		t.Errorf("TryRead(0 bytes) of an empty queue = %d, %v; want 0, nil", n, err)
	}
	q.Close()
	if _, err := q.TryRead(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("TryRead(0 bytes) of a closed queue: %v, want ErrClosed", err)
	}
}

func TestBlockingReadAndClose(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindKey})
	q := newSized(t, 32)
	_ = wl.Add(q, 1, 3, CurrentCred())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := q.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on empty queue: %v, want deadline", err)
	}

	got := make(chan record.Record)
	go func() {
		r, err := q.Next(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	wl.Post(keyRec(record.KeyLinked, 1, 77), SystemCred, 1)
	if r := <-got; r.Tag() != 3 || r.Subtype() != record.KeyLinked {
		t.Errorf("Next = %v", r)
	}

	// Close wakes every blocked reader with ErrClosed.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := q.Read(context.Background(), make([]byte, 128))
			errs <- err
		})
	}
	time.Sleep(10 * time.Millisecond)
	q.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("reader woke with %v, want ErrClosed", err)
		}
	}
	if wl.Len() != 0 || e.Watches(CurrentCred().UID) != 0 {
		t.Errorf("Close left %d watches (%d charged)", wl.Len(), e.Watches(CurrentCred().UID))
	}
	// Close removes watches silently and later posts are dropped.
	if n := wl.Post(keyRec(record.KeyLinked, 1, 1), SystemCred, 1); n != 0 {
		t.Errorf("post after close reached %d queues", n)
	}
}

func TestIterator(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindKey})
	q := newSized(t, 32)
	_ = wl.Add(q, 1, 3, CurrentCred())
	for i := range 5 {
		wl.Post(keyRec(record.KeyUpdated, 1, uint32(i)), SystemCred, 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	for r, err := range q.Records(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := r.Key(); k.Aux != uint32(n) {
			t.Fatalf("record %d has aux %d", n, k.Aux)
		}
		if n++; n == 5 {
			cancel()
			break
		}
	}
	if n != 5 {
		t.Errorf("iterated %d records", n)
	}
}

func TestReadySet(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindDevices})
	rs := NewReadySet()
	var qs []*Queue
	for i := range 50 {
		q := newSized(t, 32)
		_ = wl.Add(q, record.ObjectID(i), 0, CurrentCred())
		rs.Add(q)
		qs = append(qs, q)
	}
	wl.Post(keyRec(record.KeyUpdated, 1, 0), SystemCred, 7)
	wl.Post(keyRec(record.KeyUpdated, 1, 0), SystemCred, 7) // same queue: one report
	wl.Post(keyRec(record.KeyUpdated, 1, 0), SystemCred, 42)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ready, err := rs.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ready) != 2 || ready[0] != qs[7] || ready[1] != qs[42] {
		t.Fatalf("ready = %v", ready)
	}
	for _, q := range ready {
		drain(t, q)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if r, err := rs.Wait(short); err == nil {
		t.Fatalf("spurious report %v", r)
	}
	qs[3].Close()
	if r, err := rs.Wait(ctx); err != nil || len(r) != 1 || r[0] != qs[3] {
		t.Errorf("close not reported: %v %v", r, err)
	}
}

// TestPendingLossReadable pins the documented difference from pipe_poll
// (Queue.readableLocked): a pending loss record with nothing queued counts
// as readable, is reported to the ReadySet, and a read returns it at once.
func TestPendingLossReadable(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindDevices})
	q := newSized(t, 32)
	_ = wl.Add(q, 0, 0, CurrentCred())
	rs := NewReadySet()
	rs.Add(q)
	done, cancel := context.WithCancel(context.Background())
	cancel() // nothing below may block

	wl.PostLoss(2) // upstream loss on an empty ring
	if !q.Readable() {
		t.Error("pending upstream loss: not readable")
	}
	if r, err := rs.Wait(done); err != nil || len(r) != 1 || r[0] != q {
		t.Errorf("pending upstream loss not reported: %v, %v", r, err)
	}
	if r, err := q.Next(done); err != nil || !r.IsLoss() {
		t.Errorf("Next = %v, %v; want the loss record at once", r, err)
	}

	// The kernel's own case: the reader consumed a flagged last record.
	for i := range 33 {
		wl.Post(keyRec(record.KeyUpdated, 1, uint32(i)), SystemCred, 0)
	}
	for range 32 {
		if r, err := q.Next(done); err != nil || r.IsLoss() {
			t.Fatalf("Next = %v, %v", r, err)
		}
	}
	if s := q.Stats(); s.Queued != 0 || !q.Readable() {
		t.Errorf("after the flagged last record: queued %d, readable %v; want 0, true", s.Queued, q.Readable())
	}
	if r, err := q.Next(done); err != nil || !r.IsLoss() {
		t.Errorf("Next = %v, %v; want the loss record", r, err)
	}
	if q.Readable() {
		t.Error("readable after the loss record was read")
	}
}

// TestReadySetMove: a queue moved to another set before the first
// collected its report is reported by the new set, at once and for later
// records, and no longer by the old one.
func TestReadySetMove(t *testing.T) {
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindDevices})
	q := newSized(t, 32)
	_ = wl.Add(q, 0, 0, CurrentCred())
	a, b := NewReadySet(), NewReadySet()
	a.Add(q)
	wl.Post(keyRec(record.KeyUpdated, 1, 0), SystemCred, 0) // reported to a, never collected
	b.Add(q)
	done, cancel := context.WithCancel(context.Background())
	cancel() // Wait returns what is reported without blocking
	if r, err := b.Wait(done); err != nil || len(r) != 1 || r[0] != q {
		t.Fatalf("new set: %v, %v; want the moved readable queue", r, err)
	}
	if r, err := a.Wait(done); err == nil {
		t.Errorf("old set still reports %v", r)
	}
	drain(t, q)
	wl.Post(keyRec(record.KeyUpdated, 1, 1), SystemCred, 0)
	if r, err := b.Wait(done); err != nil || len(r) != 1 || r[0] != q {
		t.Errorf("new set, next record: %v, %v; want the queue", r, err)
	}
	b.Remove(q)
	drain(t, q)
	wl.Post(keyRec(record.KeyUpdated, 1, 2), SystemCred, 0)
	if r, err := b.Wait(done); err == nil {
		t.Errorf("set reports %v after Remove", r)
	}
}

// TestStalledReader: 1e6 posts into a queue nobody reads. The poster
// finishes, memory stays bounded, and the loss count is exact.
func TestStalledReader(t *testing.T) {
	const posts = 1_000_000
	e := NewEngine(Config{})
	wl := e.NewWatchList(Object{Kind: KindKey})
	q := newSized(t, 64)
	_ = wl.Add(q, 1, 0, CurrentCred())
	rec := keyRec(record.KeyUpdated, 1, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range posts {
		wl.Post(rec, SystemCred, 1)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Errorf("posting allocated %d bytes", grew)
	}
	s := q.Stats()
	if s.Posted != 64 || s.Lost != posts-64 {
		t.Fatalf("stats %+v; want 64 posted, %d lost", s, posts-64)
	}
	got := drain(t, q)
	if len(got) != 65 {
		t.Fatalf("read %d records", len(got))
	}
	if l, err := got[64].Loss(); err != nil || l.Count != 0xffff {
		t.Errorf("loss record %v %+v: want the count saturated at 0xffff", err, l)
	}
}

func TestPostAllocs(t *testing.T) {
	e := NewEngine(Config{Policy: AllowAll{}})
	wl := e.NewWatchList(Object{Kind: KindKey})
	q := newSized(t, 32)
	_ = wl.Add(q, 1, 0, CurrentCred())
	rec := keyRec(record.KeyUpdated, 1, 0)
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		wl.Post(rec, SystemCred, 1)
		_, _ = q.TryRead(buf)
	})
	if allocs != 0 {
		t.Errorf("post+read allocates %.1f times", allocs)
	}
}

// TestErrClosedMatchesOS: the engine's one closed error matches
// os.ErrClosed and EBADF.
func TestErrClosedMatchesOS(t *testing.T) {
	q := NewQueue()
	q.Close()
	_, err := q.SetSize(32)
	if !errors.Is(err, ErrClosed) || !errors.Is(err, os.ErrClosed) || !errors.Is(err, syscall.EBADF) {
		t.Errorf("SetSize after Close = %v", err)
	}
	if errors.Is(ErrWatchExists, os.ErrClosed) || errors.Is(ErrWatchExists, ErrSizeSet) {
		t.Error("ErrWatchExists matches an unrelated sentinel")
	}
	if err := q.SetFilter(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SetFilter after Close = %v, want ErrClosed", err)
	}
}
