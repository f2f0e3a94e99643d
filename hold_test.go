package watchq

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/watchq/watchq/record"
)

// pipeModel is what stands behind a holding queue in these tests: the
// packets a forwarder took from the queue, in order, as a client's pipe
// holds them, and the count of records its reader consumed that the queue
// has not yet been told about (Holder.Consumed).
type pipeModel struct {
	packets  [][]byte
	consumed int
	waiting  int // LossWaiting calls
}

func (p *pipeModel) Consumed() int { n := p.consumed; p.consumed = 0; return n }
func (p *pipeModel) LossWaiting()  { p.waiting++ }

// forward moves what one TryRead with a buffer of size bytes returns into
// the pipe, one record per packet.
func (p *pipeModel) forward(t testing.TB, q *Queue, size int) {
	buf := make([]byte, size)
	n, err := q.TryRead(buf)
	if err != nil {
		if !errors.Is(err, ErrWouldBlock) && !errors.Is(err, ErrBufferTooSmall) {
			t.Fatalf("TryRead: %v", err)
		}
		return
	}
	for r, err := range record.Records(buf[:n]) {
		if err != nil {
			t.Fatal(err)
		}
		p.packets = append(p.packets, append([]byte(nil), r...))
	}
}

// read pops the oldest packet, as the pipe's reader does.
func (p *pipeModel) read() []byte {
	if len(p.packets) == 0 {
		return nil
	}
	r := p.packets[0]
	p.packets = p.packets[1:]
	if !record.Record(r).IsLoss() {
		p.consumed++
	}
	return r
}

func seqRec(i uint64) []byte {
	b := make([]byte, 16)
	record.Header{Type: record.TypeUserFirst, Info: record.MakeInfo(16, 0, 0)}.Put(b)
	binary.LittleEndian.PutUint64(b[8:], i)
	return b
}

func postRec(q *Queue, rec []byte) {
	q.mu.Lock()
	q.postLocked(rec, 0)
	q.unlock()
}

func names(recs [][]byte) string {
	var b bytes.Buffer
	for _, r := range recs {
		if l, err := record.Record(r).Loss(); err == nil {
			fmt.Fprintf(&b, "L%d ", l.Count)
		} else {
			fmt.Fprintf(&b, "%d ", binary.LittleEndian.Uint64(r[8:]))
		}
	}
	return b.String()
}

// mergeLoss is names with adjacent loss records taken as one.
func mergeLoss(recs [][]byte) string {
	var out [][]byte
	for _, r := range recs {
		if n := len(out); n > 0 && record.Record(r).IsLoss() && record.Record(out[n-1]).IsLoss() {
			a, _ := record.Record(out[n-1]).Loss()
			b, _ := record.Record(r).Loss()
			m := make([]byte, record.LossSize)
			record.PutLoss(m, uint64(a.Count)+uint64(b.Count))
			out[n-1] = m
			continue
		}
		out = append(out, r)
	}
	return names(out)
}

// TestHoldStormLossAtKernelPosition: a queue of 32 whose forwarder has
// taken all 32 records into a pipe nobody reads loses the next 32, and
// its reader sees the 32 records and then one loss record, as from one
// notification pipe of 32 notes; the loss record waits until the reader
// has passed the 32nd record.
func TestHoldStormLossAtKernelPosition(t *testing.T) {
	q := newSized(t, 1)
	p := &pipeModel{}
	q.Hold(p)
	for i := range 32 {
		postRec(q, seqRec(uint64(i)))
	}
	p.forward(t, q, 4096)
	for i := 32; i < 64; i++ {
		postRec(q, seqRec(uint64(i)))
	}
	if p.waiting != 1 {
		t.Errorf("LossWaiting called %d times, want once", p.waiting)
	}
	if q.Readable() {
		t.Fatal("readable before the reader passed the held records")
	}
	var got [][]byte
	for range 31 {
		got = append(got, p.read())
	}
	if !q.Reclaim() {
		t.Fatal("Reclaim: no loss waiting while a held record is unread")
	}
	got = append(got, p.read())
	if q.Reclaim() {
		t.Fatal("Reclaim: a loss still waits after every held record was read")
	}
	p.forward(t, q, 4096)
	got = append(got, p.packets...)
	want := "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 L32 "
	if names(got) != want {
		t.Errorf("reader saw %s\nwant %s", names(got), want)
	}
	if s := q.Stats(); s.Lost != 32 || s.Posted != 32 {
		t.Errorf("stats %+v, want 32 posted, 32 lost", s)
	}
}

// TestHoldLossBeforeNextRecord: a record queued after a loss behind the
// held records brings the loss record with it, ahead of it.
func TestHoldLossBeforeNextRecord(t *testing.T) {
	q := newSized(t, 1)
	p := &pipeModel{}
	q.Hold(p)
	for i := range 33 {
		postRec(q, seqRec(uint64(i))) // 32 is lost: 31 is flagged
	}
	p.forward(t, q, 4096) // 0..31 held, the loss waits behind 31
	for range 5 {
		p.read()
	}
	postRec(q, seqRec(33)) // room for 33 once the five are reclaimed
	p.forward(t, q, 4096)
	if got, want := names(p.packets), "5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 L1 33 "; got != want {
		t.Errorf("pipe holds %s\nwant      %s", got, want)
	}
}

// FuzzHoldLoss checks a holding queue and its pipe against one plain
// queue whose reader reads what the pipe's reader reads: for every
// interleaving of posts, upstream losses, forwarding, reads and reclaims
// the reader sees the same stream, loss records and counts included, and
// the same records are lost.
func FuzzHoldLoss(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 0, 0, 3, 2, 2})
	f.Add(bytes.Repeat([]byte{0}, 70))
	f.Fuzz(holdCase)
}

// holdCase is one FuzzHoldLoss run: ops are posts, forwards, reads,
// reclaims and upstream losses.
func holdCase(t *testing.T, ops []byte) {
	// A few hundred operations reach every state (the queue holds 32);
	// longer inputs only slow the fuzzer's minimization down.
	ops = ops[:min(len(ops), 512)]
	ref, q := newSized(t, 1), newSized(t, 1)
	p := &pipeModel{}
	q.Hold(p)
	var got, want [][]byte
	// refRead reads one record or loss record from ref; ok is false
	// when ref had none.
	refRead := func() (isRecord, ok bool) {
		var b [record.NoteSize]byte
		ref.mu.Lock()
		n, err := ref.readLocked(b[:], true)
		ref.unlock()
		if err != nil {
			return false, false
		}
		want = append(want, append([]byte(nil), b[:n]...))
		return !record.Record(b[:n]).IsLoss(), true
	}
	seq := uint64(0)
	upstream := false
	for _, op := range ops {
		switch op % 5 {
		case 0, 4:
			rec := seqRec(seq)
			seq++
			postRec(ref, rec)
			postRec(q, rec)
		case 1:
			p.forward(t, q, 8+16*int(op>>3))
		case 2:
			r := p.read()
			if r == nil {
				continue
			}
			got = append(got, r)
			for !record.Record(r).IsLoss() {
				isRec, ok := refRead()
				if !ok {
					t.Fatalf("the pipe's reader got %s, one queue has nothing", names([][]byte{r}))
				}
				if isRec {
					break
				}
			}
		case 3:
			if op&0x80 != 0 {
				upstream = true
				for _, x := range []*Queue{ref, q} {
					x.mu.Lock()
					x.lossLocked(1)
					x.unlock()
				}
			} else {
				q.Reclaim()
			}
		}
	}
	for {
		q.Reclaim()
		p.forward(t, q, 4096)
		if len(p.packets) == 0 {
			break
		}
		for len(p.packets) > 0 {
			got = append(got, p.read())
		}
	}
	for {
		if _, ok := refRead(); !ok {
			break
		}
	}
	g, w := names(got), names(want)
	if upstream {
		// A loss record already forwarded cannot take a later
		// upstream loss (PostLoss, which the kernel does not
		// have) into its count: the two may arrive apart.
		g, w = mergeLoss(got), mergeLoss(want)
	}
	if g != w {
		t.Errorf("through the pipe: %s\none queue:        %s", g, w)
	}
	if a, b := q.Stats().Lost, ref.Stats().Lost; a != b {
		t.Errorf("lost %d, one queue lost %d", a, b)
	}
}
