package fleet

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/watchq/watchq/record"
)

// The spool is the forwarder's on-disk backlog. Every record the forwarder
// takes from its queue is appended to it, with its sequence number and
// time, before it is published; the publisher reads it back in order, and a
// segment file is deleted once JetStream has acknowledged every record in
// it. Its size on disk never exceeds the bound: past it, records are
// counted, not written, and the count goes in as one loss entry as soon as
// there is room for that entry and the record after it.
//
// Segment file: segMagic, u16 boot id length, the boot id, then entries:
//
//	0  u32 CRC-32C of bytes 4..end
//	4  u8  kind (1 record, 2 loss)
//	5  u8  loss causes (Cause bits)
//	6  u8  record length n
//	7  u8  0
//	8  u64 sequence
//	16 i64 time, Unix nanoseconds
//	24 u64 records lost (loss entries)
//	32 n   the record
//
// Integers are little-endian. state.json holds the highest sequence
// JetStream acknowledged (with every lower one), written before any
// segment is deleted.

const (
	entryHeaderSize = 32
	kindRecord      = 1
	kindLoss        = 2
	segMagic        = "WQFWD01\n"
	segPrefix       = "seg-"
	segSuffix       = ".wqf"
	stateFile       = "state.json"

	// MinBacklog is the smallest backlog bound: room for a few segments.
	MinBacklog = 16 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// entry is one spooled record or loss.
type entry struct {
	kind  uint8
	cause Cause
	seq   uint64
	time  int64
	lost  uint64
	rec   []byte // aliases a read buffer
	boot  string
}

func entrySize(recLen int) int64 { return int64(entryHeaderSize + recLen) }

func appendEntry(b []byte, e *entry) []byte {
	start := len(b)
	b = append(b, make([]byte, entryHeaderSize)...)
	h := b[start:]
	h[4], h[5], h[6] = e.kind, byte(e.cause), byte(len(e.rec))
	binary.LittleEndian.PutUint64(h[8:], e.seq)
	binary.LittleEndian.PutUint64(h[16:], uint64(e.time))
	binary.LittleEndian.PutUint64(h[24:], e.lost)
	b = append(b, e.rec...)
	binary.LittleEndian.PutUint32(b[start:], crc32.Checksum(b[start+4:], crcTable))
	return b
}

// parseEntry decodes the entry at the start of b. It returns the entry's
// size, 0 when b holds only part of it, or an error when it is not one.
func parseEntry(b []byte, e *entry) (int, error) {
	if len(b) < entryHeaderSize {
		return 0, nil
	}
	n := int(b[6])
	if (b[4] != kindRecord && b[4] != kindLoss) || n < record.HeaderSize || n > record.MaxRecordSize || b[7] != 0 {
		return 0, errors.New("bad entry header")
	}
	size := entryHeaderSize + n
	if len(b) < size {
		return 0, nil
	}
	if crc32.Checksum(b[4:size], crcTable) != binary.LittleEndian.Uint32(b) {
		return 0, errors.New("entry checksum mismatch")
	}
	*e = entry{kind: b[4], cause: Cause(b[5]), seq: binary.LittleEndian.Uint64(b[8:]),
		time: int64(binary.LittleEndian.Uint64(b[16:])), lost: binary.LittleEndian.Uint64(b[24:]), rec: b[entryHeaderSize:size]}
	if _, err := record.ParseRecord(e.rec); err != nil || int(record.HeaderAt(e.rec).Len()) != n {
		return 0, errors.New("entry holds a malformed record")
	}
	return size, nil
}

// segment is one file of the spool.
type segment struct {
	path        string
	boot        string
	hdr         int64  // header size
	first, last uint64 // sequences of its first and last flushed entries; 0 while empty
	size        int64  // bytes written to the file
}

// spool is safe for one appending goroutine and one reading goroutine.
type spool struct {
	dir    string
	max    int64
	segMax int64

	mu      sync.Mutex
	segs    []*segment // oldest first; the last is the tail, being written
	size    int64      // bytes of every segment, unflushed bytes included
	next    uint64     // the next sequence to assign
	acked   uint64     // JetStream holds every sequence up to this
	lost    uint64     // records dropped and not yet in a loss entry
	cause   Cause      // why, for that loss entry
	dropped uint64     // records dropped in all (statistics)
	boot    string     // boot id of the tail
	wf      *os.File   // the tail, open for appending
	wbuf    []byte     // entries not yet written to wf
	wlast   uint64     // sequence of the last entry in wbuf
	wfirst  uint64     // sequence of the first entry in wbuf
	notify  chan struct{}

	stateMu sync.Mutex // serialises state.json writes
	saved   uint64     // acked as last written to state.json

	// Copies of next, acked, dropped and size for stats, which must not
	// contend with the writer and the reader.
	snapNext, snapAcked, snapDropped atomic.Uint64
	snapSize                         atomic.Int64
}

// snapshot publishes the counters for stats.
//
// Preconditions: s.mu is held.
func (s *spool) snapshot() {
	s.snapNext.Store(s.next)
	s.snapAcked.Store(s.acked)
	s.snapDropped.Store(s.dropped)
	s.snapSize.Store(s.size)
}

// segmentSize is the size at which a bound of b bytes starts a new segment:
// an eighth of it, 4 KiB to 4 MiB.
func segmentSize(b int64) int64 { return min(max(b/8, 4<<10), 4<<20) }

// openSpool opens (or creates) the spool in dir, bounded to max bytes,
// recovering what a previous run left: entries after the last one
// acknowledged are kept for replay (a torn last entry is cut off), and
// sequence numbers go on after the highest ever assigned.
func openSpool(dir string, maxBytes int64, boot string) (*spool, error) {
	if maxBytes < MinBacklog {
		return nil, fmt.Errorf("fleet: backlog bound %d bytes is below the minimum %d", maxBytes, MinBacklog)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fleet: backlog: %w", err)
	}
	s := &spool{dir: dir, max: maxBytes, segMax: segmentSize(maxBytes), boot: boot, notify: make(chan struct{}, 1)}
	if b, err := os.ReadFile(filepath.Join(dir, stateFile)); err == nil {
		var st struct{ Acked uint64 }
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("fleet: backlog: %s: %w", stateFile, err)
		}
		s.acked, s.saved = st.Acked, st.Acked
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("fleet: backlog: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"+segSuffix))
	if err != nil {
		return nil, err
	}
	slices.Sort(names) // zero-padded first sequence: name order is sequence order
	var high uint64
	for _, name := range names {
		seg, err := recoverSegment(name, high)
		if err != nil {
			return nil, err
		}
		if seg.last != 0 {
			high = seg.last
		}
		if seg.last == 0 || seg.last <= s.acked {
			if err := os.Remove(name); err != nil {
				return nil, fmt.Errorf("fleet: backlog: %w", err)
			}
			continue
		}
		s.segs = append(s.segs, seg)
		s.size += seg.size
	}
	s.next = max(high, s.acked) + 1
	if err := s.newTail(); err != nil {
		return nil, err
	}
	s.snapshot()
	return s, nil
}

// recoverSegment reads a segment left by an earlier run, cutting it at the
// first entry that is torn or does not follow the one before it (the last
// entry of the previous segment has sequence prev).
func recoverSegment(name string, prev uint64) (*segment, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("fleet: backlog: %w", err)
	}
	seg := &segment{path: name}
	if len(b) < len(segMagic)+2 || string(b[:len(segMagic)]) != segMagic {
		return seg, nil // never got its header: empty
	}
	bl := int(binary.LittleEndian.Uint16(b[len(segMagic):]))
	seg.hdr = int64(len(segMagic) + 2 + bl)
	if int64(len(b)) < seg.hdr {
		return seg, nil
	}
	seg.boot = string(b[len(segMagic)+2 : seg.hdr])
	off := seg.hdr
	var e entry
	for off < int64(len(b)) {
		n, err := parseEntry(b[off:], &e)
		if n == 0 || err != nil || e.seq <= prev {
			break
		}
		if seg.first == 0 {
			seg.first = e.seq
		}
		seg.last, prev = e.seq, e.seq
		off += int64(n)
	}
	if off < int64(len(b)) {
		if err := os.Truncate(name, off); err != nil {
			return nil, fmt.Errorf("fleet: backlog: cut torn %s: %w", name, err)
		}
	}
	seg.size = off
	return seg, nil
}

// newTail starts a new segment for entries from s.next on.
//
// Preconditions: s.mu is held or s is not shared yet; wbuf is flushed.
func (s *spool) newTail() error {
	if s.wf != nil {
		if err := s.wf.Close(); err != nil {
			return fmt.Errorf("fleet: backlog: %w", err)
		}
		s.wf = nil
	}
	seg := &segment{path: filepath.Join(s.dir, fmt.Sprintf("%s%020d%s", segPrefix, s.next, segSuffix)), boot: s.boot}
	f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("fleet: backlog: %w", err)
	}
	hdr := append([]byte(segMagic), 0, 0)
	binary.LittleEndian.PutUint16(hdr[len(segMagic):], uint16(len(s.boot)))
	hdr = append(hdr, s.boot...)
	if _, err := f.Write(hdr); err != nil {
		f.Close()
		return fmt.Errorf("fleet: backlog: %w", err)
	}
	seg.hdr, seg.size = int64(len(hdr)), int64(len(hdr))
	s.wf = f
	s.segs = append(s.segs, seg)
	s.size += seg.size
	return nil
}

func (s *spool) tail() *segment { return s.segs[len(s.segs)-1] }

// appendRecord spools rec, taken from the queue at t, or counts it lost
// if the backlog is full. It reports whether rec was spooled.
func (s *spool) appendRecord(rec []byte, t time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add(&entry{kind: kindRecord, time: t.UnixNano(), rec: rec})
}

// appendLoss spools a loss of n records (cause), or adds it to the
// backlog's own count if the backlog is full.
func (s *spool) appendLoss(cause Cause, n uint64, t time.Time) error {
	var rec [record.LossSize]byte
	record.PutLoss(rec[:], n)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.add(&entry{kind: kindLoss, cause: cause, time: t.UnixNano(), lost: n, rec: rec[:]})
	return err
}

// appendAll spools es in order, each as appendRecord or appendLoss would
// (a loss entry's record is made here), under one lock, and flushes.
func (s *spool) appendAll(es []entry) error {
	var rec [record.LossSize]byte
	s.mu.Lock()
	for i := range es {
		e := &es[i]
		if e.kind == kindLoss {
			record.PutLoss(rec[:], e.lost)
			e.rec = rec[:]
		}
		if _, err := s.add(e); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	err := s.flushLocked()
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return err
}

// add spools e, preceded by the loss entry for what was dropped before it,
// if both fit; otherwise counts e as lost.
//
// Preconditions: s.mu is held.
func (s *spool) add(e *entry) (bool, error) {
	pending := s.lost > 0 || s.cause != 0
	if pending && e.kind == kindLoss {
		// One loss entry for both.
		e.lost += s.lost
		e.cause |= s.cause
		record.PutLoss(e.rec, e.lost)
		s.lost, s.cause, pending = 0, 0, false
	}
	need := entrySize(len(e.rec))
	if pending {
		need += entrySize(record.LossSize)
	}
	t := s.tail()
	rotate := t.size+int64(len(s.wbuf))+need > s.segMax && t.size+int64(len(s.wbuf)) > t.hdr
	if rotate {
		need += t.hdr // the new segment's header, about the same size
	}
	if s.size+need > s.max {
		if e.kind == kindLoss {
			s.lost += e.lost
			s.cause |= e.cause
		} else {
			s.lost++
			s.dropped++
			s.cause |= CauseBacklog
		}
		return false, nil
	}
	if rotate {
		if err := s.flushLocked(); err != nil {
			return false, err
		}
		if err := s.newTail(); err != nil {
			return false, err
		}
	}
	if pending {
		var rec [record.LossSize]byte
		record.PutLoss(rec[:], s.lost)
		s.put(&entry{kind: kindLoss, cause: s.cause, time: e.time, lost: s.lost, rec: rec[:]})
		s.lost, s.cause = 0, 0
	}
	s.put(e)
	return true, nil
}

// put assigns e the next sequence and buffers it.
//
// Preconditions: s.mu is held.
func (s *spool) put(e *entry) {
	e.seq = s.next
	s.next++
	n := len(s.wbuf)
	s.wbuf = appendEntry(s.wbuf, e)
	s.size += int64(len(s.wbuf) - n)
	if s.wfirst == 0 {
		s.wfirst = e.seq
	}
	s.wlast = e.seq
}

// flush writes the buffered entries to the tail and tells the reader.
func (s *spool) flush() error {
	s.mu.Lock()
	err := s.flushLocked()
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return err
}

// Preconditions: s.mu is held.
func (s *spool) flushLocked() error {
	if len(s.wbuf) == 0 {
		s.snapshot()
		return nil
	}
	_, err := s.wf.Write(s.wbuf)
	if err != nil {
		return fmt.Errorf("fleet: backlog: %w", err)
	}
	t := s.tail()
	t.size += int64(len(s.wbuf))
	if t.first == 0 {
		t.first = s.wfirst
	}
	t.last = s.wlast
	s.wbuf, s.wfirst = s.wbuf[:0], 0
	s.snapshot()
	return nil
}

// ack records that JetStream holds every sequence up to acked, and deletes
// the segments that are wholly acknowledged, after saving the state that
// says so.
func (s *spool) ack(acked uint64) error {
	s.mu.Lock()
	if acked > s.acked {
		s.acked = acked
	}
	var gone []*segment
	for len(s.segs) > 1 && (s.segs[0].last == 0 || s.segs[0].last <= s.acked) {
		gone = append(gone, s.segs[0])
		s.size -= s.segs[0].size
		s.segs = s.segs[1:]
	}
	s.snapshot()
	s.mu.Unlock()
	if len(gone) == 0 {
		return nil
	}
	// The state must say these are acknowledged before they go: a
	// restart computes the next sequence from the state and what is
	// left.
	if err := s.saveState(true); err != nil {
		return err
	}
	for _, seg := range gone {
		if err := os.Remove(seg.path); err != nil {
			return fmt.Errorf("fleet: backlog: %w", err)
		}
	}
	return s.flushLoss()
}

// flushLoss spools the loss entry for records dropped while the backlog
// was full, now that there may be room for it, rather than waiting for
// the next record.
func (s *spool) flushLoss() error {
	s.mu.Lock()
	if s.lost == 0 && s.cause == 0 {
		s.mu.Unlock()
		return nil
	}
	var rec [record.LossSize]byte
	record.PutLoss(rec[:], 0)
	// add merges the pending loss into this entry of 0 records.
	_, err := s.add(&entry{kind: kindLoss, time: time.Now().UnixNano(), rec: rec[:]})
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.flush()
}

// saveState writes state.json if acked moved since the last write.
func (s *spool) saveState(sync bool) error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	acked := s.acked
	s.mu.Unlock()
	if acked == s.saved {
		return nil
	}
	tmp := filepath.Join(s.dir, stateFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("fleet: backlog state: %w", err)
	}
	_, err = f.WriteString(`{"acked":` + strconv.FormatUint(acked, 10) + "}\n")
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, stateFile))
	}
	if err != nil {
		return fmt.Errorf("fleet: backlog state: %w", err)
	}
	s.saved = acked
	return nil
}

// close flushes, saves the state and closes the tail.
func (s *spool) close() error {
	err := s.flush()
	if serr := s.saveState(true); err == nil {
		err = serr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wf != nil {
		if cerr := s.wf.Close(); err == nil {
			err = cerr
		}
		s.wf = nil
	}
	return err
}

// spoolStats is the spool's state for Stats.
type spoolStats struct {
	next, acked, dropped uint64
	size                 int64
}

// stats returns the counters as of the last flush or acknowledgement.
func (s *spool) stats() spoolStats {
	return spoolStats{next: s.snapNext.Load(), acked: s.snapAcked.Load(), dropped: s.snapDropped.Load(), size: s.snapSize.Load()}
}

// cursor reads the spool's flushed entries in sequence order.
type cursor struct {
	s      *spool
	seg    *segment
	f      *os.File
	buf    []byte // file bytes from bufOff
	bufOff int64
	pos    int    // next unread byte of buf
	skip   uint64 // entries below this sequence are skipped (seek)
}

func newCursor(s *spool) *cursor { return &cursor{s: s, buf: make([]byte, 0, 64<<10)} }

// seek makes the next entry read the one with sequence seq (or the first
// after it that exists).
func (c *cursor) seek(seq uint64) error {
	c.s.mu.Lock()
	i := 0
	for j, seg := range c.s.segs {
		if seg.first != 0 && seg.first <= seq {
			i = j
		}
	}
	seg := c.s.segs[i]
	c.s.mu.Unlock()
	c.skip = seq
	return c.open(seg)
}

func (c *cursor) open(seg *segment) error {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
	f, err := os.Open(seg.path)
	if err != nil {
		return fmt.Errorf("fleet: backlog: %w", err)
	}
	c.seg, c.f = seg, f
	c.buf, c.bufOff, c.pos = c.buf[:0], seg.hdr, 0
	return nil
}

func (c *cursor) close() {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
}

// next reads the next entry into e (e.rec aliases the cursor's buffer
// until the next call). It returns false when every flushed entry has
// been read.
func (c *cursor) next(e *entry) (bool, error) {
	for {
		for c.pos < len(c.buf) {
			n, err := parseEntry(c.buf[c.pos:], e)
			if err != nil {
				return false, fmt.Errorf("fleet: backlog %s at offset %d: %w", c.seg.path, c.bufOff+int64(c.pos), err)
			}
			if n == 0 {
				break
			}
			c.pos += n
			if e.seq < c.skip {
				continue
			}
			e.boot = c.seg.boot
			return true, nil
		}
		c.s.mu.Lock()
		limit := c.seg.size
		var following *segment
		if i := slices.Index(c.s.segs, c.seg); i < 0 {
			following = c.s.segs[0] // ours is gone: every entry in it was acknowledged
		} else if i+1 < len(c.s.segs) {
			following = c.s.segs[i+1]
		}
		c.s.mu.Unlock()
		end := c.bufOff + int64(len(c.buf))
		if end < limit {
			// Keep the partial entry, read more after it.
			rest := copy(c.buf[:cap(c.buf)], c.buf[c.pos:])
			c.bufOff += int64(c.pos)
			c.buf, c.pos = c.buf[:rest], 0
			want := min(int64(cap(c.buf)-rest), limit-c.bufOff-int64(rest))
			n, err := c.f.ReadAt(c.buf[rest:rest+int(want)], c.bufOff+int64(rest))
			c.buf = c.buf[:rest+n]
			if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
				return false, fmt.Errorf("fleet: backlog: %w", err)
			}
			continue
		}
		if following == nil {
			return false, nil // caught up with the writer
		}
		if c.pos < len(c.buf) {
			return false, fmt.Errorf("fleet: backlog %s: %d bytes of a torn entry at its end", c.seg.path, len(c.buf)-c.pos)
		}
		if err := c.open(following); err != nil {
			return false, err
		}
	}
}

// spoolFiles lists the segment files in dir, for tests and diagnostics.
func spoolFiles(dir string) []string {
	names, _ := filepath.Glob(filepath.Join(dir, segPrefix+"*"+segSuffix))
	for i, n := range names {
		names[i] = strings.TrimPrefix(filepath.Base(n), segPrefix)
	}
	return names
}
