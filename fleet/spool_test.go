package fleet

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/watchq/watchq/record"
)

func rec16(n byte) []byte {
	b, _ := record.Header{Type: 0x800001, Info: record.MakeInfo(16, 0, 0)}.AppendBinary(nil)
	return append(b, n, 0, 0, 0, 0, 0, 0, 0)
}

func readAll(t *testing.T, s *spool, from uint64) []entry {
	t.Helper()
	c := newCursor(s)
	defer c.close()
	if err := c.seek(from); err != nil {
		t.Fatal(err)
	}
	var out []entry
	for {
		var e entry
		ok, err := c.next(&e)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		e.rec = append([]byte(nil), e.rec...)
		out = append(out, e)
	}
}

// TestSpoolBound: the backlog never grows past its bound; what does not
// fit is counted and goes in as one loss entry, right after the last
// entry that fitted, once acknowledgements make room.
func TestSpoolBound(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, MinBacklog, "boot")
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	kept := 0
	for i := range n {
		ok, err := s.appendRecord(rec16(byte(i)), time.Unix(0, int64(i)))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if kept != i {
				t.Fatalf("record %d kept after a drop", i)
			}
			kept++
		}
		if err := s.flush(); err != nil {
			t.Fatal(err)
		}
		if du := diskUse(t, dir); du > MinBacklog {
			t.Fatalf("backlog uses %d bytes on disk, bound %d", du, MinBacklog)
		}
	}
	st := s.stats()
	if st.dropped != uint64(n-kept) || st.next != uint64(kept)+1 {
		t.Fatalf("kept %d, stats %+v", kept, st)
	}
	// A loss from the queue while full adds to the count.
	if err := s.appendLoss(CauseQueue, 5, time.Now()); err != nil {
		t.Fatal(err)
	}
	es := readAll(t, s, 1)
	if len(es) != kept {
		t.Fatalf("read %d entries, want %d", len(es), kept)
	}
	if err := s.ack(uint64(kept)); err != nil {
		t.Fatal(err)
	}
	es = readAll(t, s, uint64(kept)+1)
	if len(es) != 1 || es[0].kind != kindLoss || es[0].lost != uint64(n-kept)+5 || es[0].cause != CauseBacklog|CauseQueue || es[0].seq != uint64(kept)+1 {
		t.Fatalf("after the ack: %+v, want one loss entry of %d", es, n-kept+5)
	}
	if l, _ := record.Record(es[0].rec).Loss(); int(l.Count) != n-kept+5 {
		t.Errorf("loss record count %d", l.Count)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
}

func diskUse(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, f := range spoolFiles(dir) {
		fi, err := os.Stat(filepath.Join(dir, segPrefix+f))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestSpoolRecovery: a spool opened again keeps the unacknowledged
// entries in order, cuts a torn last entry, and numbers on after the
// highest sequence ever assigned.
func TestSpoolRecovery(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20, "boot-1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := s.appendRecord(rec16(byte(i)), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.ack(4); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	// A torn write at the end: half an entry.
	files := spoolFiles(dir)
	last := filepath.Join(dir, segPrefix+files[len(files)-1])
	torn := appendEntry(nil, &entry{kind: kindRecord, seq: 11, rec: rec16(10)})
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(torn[:20])
	f.Close()

	s, err = openSpool(dir, 1<<20, "boot-2")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if st := s.stats(); st.acked != 4 || st.next != 11 {
		t.Fatalf("reopened: %+v, want acked 4, next 11", st)
	}
	if _, err := s.appendRecord(rec16(99), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	es := readAll(t, s, 5)
	if len(es) != 7 {
		t.Fatalf("%d entries, want 7", len(es))
	}
	for i, e := range es {
		if e.seq != uint64(5+i) {
			t.Errorf("entry %d: seq %d", i, e.seq)
		}
		want, boot := rec16(byte(4+i)), "boot-1"
		if i == 6 {
			want, boot = rec16(99), "boot-2"
		}
		if !bytes.Equal(e.rec, want) || e.boot != boot {
			t.Errorf("entry %d: % x boot %s", i, e.rec, e.boot)
		}
	}
}
