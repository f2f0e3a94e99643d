//go:build vmtest

package watchq_test

// Conformance: the same scenarios run against the kernel's own notification
// pipe (kernel/watch_queue.c in the vmtest guest kernel, driven by real key
// operations) and against the engine's Queue (driven by posting the records
// those operations make), and the results must agree: the same errno for
// every bad size and filter, and the same record stream. The only
// differences allowed are the documented ones (docs/design.md): watchq's
// loss record carries a count in its type-info bits, and watchq emits a
// loss record in the same read as the flagged record where the kernel may
// defer it to the next read (so streams are compared record by record, not
// read by read).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// pair is one kernel pipe and one engine queue fed the same records.
type pair struct {
	t    *testing.T
	kp   *kernel.Pipe
	eq   *watchq.Queue
	wl   *watchq.WatchList
	key  int32
	tag  record.Tag
	ring int32 // keyring holding key
}

func newPair(t *testing.T, tag record.Tag) *pair {
	t.Helper()
	if err := kernel.Probe(); err != nil {
		t.Fatalf("the vmtest kernel must have the facility: %v", err)
	}
	// Keyrings hang off the thread's credentials (a process keyring made
	// on one thread is not seen by threads that existed before it), so
	// every key operation of a test runs on one thread.
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	kp, err := kernel.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kp.Close() })
	ring, err := unix.AddKey("keyring", fmt.Sprintf("conf-%s-%d", t.Name(), time.Now().UnixNano()), nil, unix.KEY_SPEC_PROCESS_KEYRING)
	if err != nil {
		t.Fatal(err)
	}
	key, err := unix.AddKey("user", "conf-key", []byte("v0"), ring)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the key linked (and possessed) from the process keyring too, so
	// unlinking it from ring neither lets it be garbage-collected nor
	// stops it being re-linked.
	if _, err := unix.KeyctlInt(unix.KEYCTL_LINK, key, unix.KEY_SPEC_PROCESS_KEYRING, 0, 0); err != nil {
		t.Fatal(err)
	}
	eng := watchq.NewEngine(watchq.Config{})
	return &pair{t: t, kp: kp, eq: watchq.NewQueue(), wl: eng.NewWatchList(watchq.Object{Kind: watchq.KindKey}), key: int32(key), tag: tag, ring: int32(ring)}
}

// watch places the watch on both sides.
func (p *pair) watch(id int32) {
	p.t.Helper()
	if err := p.kp.WatchKey(id, p.tag); err != nil {
		p.t.Fatalf("kernel WatchKey: %v", err)
	}
	if err := p.wl.Add(p.eq, record.ObjectID(uint32(id)), p.tag, watchq.CurrentCred()); err != nil {
		p.t.Fatalf("engine Add: %v", err)
	}
}

// post performs a real key operation on the kernel side and posts the
// record the kernel documents for it on the engine side.
func (p *pair) post(subtype uint8) {
	p.t.Helper()
	var keyID, aux uint32 = uint32(p.key), 0
	switch subtype {
	case record.KeyUpdated:
		if _, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(p.key), []byte("v1"), 0); err != nil {
			p.t.Fatalf("KEYCTL_UPDATE: %v", err)
		}
	case record.KeySetattr:
		if _, err := unix.KeyctlInt(unix.KEYCTL_SETPERM, int(p.key), 0x3f3f0000, 0, 0); err != nil {
			p.t.Fatalf("KEYCTL_SETPERM: %v", err)
		}
	case record.KeyLinked, record.KeyUnlinked:
		cmd := unix.KEYCTL_LINK
		if subtype == record.KeyUnlinked {
			cmd = unix.KEYCTL_UNLINK
		}
		if _, err := unix.KeyctlInt(cmd, int(p.key), int(p.ring), 0, 0); err != nil {
			p.t.Fatalf("keyctl link/unlink: %v", err)
		}
		keyID, aux = uint32(p.ring), uint32(p.key)
	default:
		p.t.Fatalf("no operation for subtype %d", subtype)
	}
	var b [record.NoteSize]byte
	rec, _ := record.KeyNotification{Subtype: subtype, KeyID: keyID, Aux: aux}.AppendBinary(b[:0])
	p.wl.Post(rec, watchq.SystemCred, record.ObjectID(keyID))
}

// readKernel reads once with a buffer of n bytes; (0, EAGAIN) when nothing
// is readable within a short wait.
func (p *pair) readKernel(n int) ([]byte, error) {
	buf := make([]byte, n)
	_ = p.kp.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	got, err := p.kp.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, syscall.EAGAIN
	}
	return buf[:got], err
}

func (p *pair) readEngine(n int) ([]byte, error) {
	buf := make([]byte, n)
	got, err := p.eq.TryRead(buf)
	return buf[:got], err
}

// drain reads both sides with n-byte reads until empty and returns the
// normalised record streams.
func (p *pair) drain(n int) (kern, eng []string) {
	p.t.Helper()
	for _, side := range []struct {
		read func(int) ([]byte, error)
		out  *[]string
	}{{p.readKernel, &kern}, {p.readEngine, &eng}} {
		for {
			b, err := side.read(n)
			if errors.Is(err, syscall.EAGAIN) {
				break
			}
			if err != nil {
				p.t.Fatalf("read: %v", err)
			}
			*side.out = append(*side.out, normalise(p.t, b)...)
		}
	}
	return kern, eng
}

// normalise splits a read into records, clearing the loss count watchq
// keeps in a loss record's type-info bits.
func normalise(t *testing.T, b []byte) []string {
	var out []string
	for r, err := range record.Records(b) {
		if err != nil {
			t.Fatalf("malformed read % x: %v", b, err)
		}
		r = bytes.Clone(r)
		if r.IsLoss() {
			binary.LittleEndian.PutUint32(r[4:], binary.LittleEndian.Uint32(r[4:])&^record.InfoTypeInfo)
		}
		out = append(out, fmt.Sprintf("% x", []byte(r)))
	}
	return out
}

func sameStream(t *testing.T, what string, kern, eng []string) {
	t.Helper()
	if len(kern) == 0 {
		t.Errorf("%s: the kernel produced nothing", what)
	}
	if fmt.Sprint(kern) != fmt.Sprint(eng) {
		t.Errorf("%s: streams differ\nkernel (%d): %v\nengine (%d): %v", what, len(kern), kern, len(eng), eng)
	}
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

func TestConformanceSetSize(t *testing.T) {
	for _, n := range []int{0, -1, 513, 1, 100, 512} {
		p := newPair(t, 1)
		kerr := p.kp.SetSize(n)
		_, eerr := p.eq.SetSize(n)
		if errnoOf(kerr) != errnoOf(eerr) {
			t.Errorf("SetSize(%d): kernel %v, engine %v", n, kerr, eerr)
		}
		if kerr == nil {
			// EBUSY comes before the range check, whatever the size.
			for _, again := range []int{n, 0, 513} {
				kerr2 := p.kp.SetSize(again)
				_, eerr2 := p.eq.SetSize(again)
				if errnoOf(kerr2) != syscall.EBUSY || errnoOf(eerr2) != syscall.EBUSY {
					t.Errorf("SetSize(%d) after SetSize(%d): kernel %v, engine %v; want EBUSY", again, n, kerr2, eerr2)
				}
			}
		}
	}
}

// TestConformanceCapacity: the number of records a queue holds before loss
// is the kernel's page rounding (1 → 32, 33 → 64, 100 → 128).
func TestConformanceCapacity(t *testing.T) {
	for _, n := range []int{1, 33, 100} {
		p := newPair(t, 2)
		if err := p.kp.SetSize(n); err != nil {
			t.Fatal(err)
		}
		if _, err := p.eq.SetSize(n); err != nil {
			t.Fatal(err)
		}
		p.watch(p.key)
		for range 140 {
			p.post(record.KeyUpdated)
		}
		kern, eng := p.drain(4096)
		sameStream(t, fmt.Sprintf("size %d, 140 updates", n), kern, eng)
		if want := (n+31)/32*32 + 1; len(kern) != want {
			t.Errorf("size %d: kernel gave %d records, want %d (capacity + one loss record)", n, len(kern), want)
		}
	}
}

func TestConformanceFilterErrors(t *testing.T) {
	raw := func(nr, reserved uint32, entries ...[4]uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, nr)
		b = binary.LittleEndian.AppendUint32(b, reserved)
		for _, e := range entries {
			for _, w := range e[:3] {
				b = binary.LittleEndian.AppendUint32(b, w)
			}
			b = binary.LittleEndian.AppendUint32(b, e[3])
			b = append(b, make([]byte, 28)...)
		}
		return b
	}
	ok := [4]uint32{1, 0, 0, ^uint32(0)}
	var many [][4]uint32
	for range 17 {
		many = append(many, ok)
	}
	for name, f := range map[string][]byte{
		"valid":                    raw(1, 0, ok),
		"zero entries":             raw(0, 0),
		"seventeen entries":        raw(17, 0, many...),
		"reserved set":             raw(1, 1, ok),
		"info_filter outside mask": raw(1, 0, [4]uint32{1, 0x100, 0, 1}),
		"mask covers length":       raw(1, 0, [4]uint32{1, 0, 0x7f, 1}),
		"mask bit 7":               raw(1, 0, [4]uint32{1, 0, 0x80, 1}),
		"unknown type":             raw(1, 0, [4]uint32{1023, 0, 0, 1}),
		"tag filter":               raw(1, 0, [4]uint32{1, 0x300, 0xff00, 1}),
	} {
		p := newPair(t, 1)
		kerr := p.kp.SetRawFilter(f)
		_, eerr := record.ParseFilter(f)
		if errnoOf(kerr) != errnoOf(eerr) {
			t.Errorf("%s: kernel %v, engine %v", name, kerr, eerr)
		}
	}
}

// TestConformanceStream: overflow, loss, whole-record reads, ENOBUFS,
// filtering by subtype and tag, and the removal record on unwatch.
func TestConformanceStream(t *testing.T) {
	p := newPair(t, 7)
	for _, q := range []func(int) error{p.kp.SetSize, func(n int) error { _, err := p.eq.SetSize(n); return err }} {
		if err := q(1); err != nil {
			t.Fatal(err)
		}
	}
	p.watch(p.key)
	p.watch(p.ring)

	for range 5 {
		p.post(record.KeyUpdated)
	}
	// A read of 40 bytes returns two whole 16-byte records on both sides.
	kb, kerr := p.readKernel(40)
	eb, eerr := p.readEngine(40)
	if len(kb) != 32 || len(eb) != 32 || kerr != nil || eerr != nil || !bytes.Equal(kb, eb) {
		t.Errorf("read(40): kernel %d %v, engine %d %v", len(kb), kerr, len(eb), eerr)
	}
	// A buffer smaller than the next record is ENOBUFS on both.
	_, kerr = p.readKernel(8)
	_, eerr = p.readEngine(8)
	if errnoOf(kerr) != syscall.ENOBUFS || errnoOf(eerr) != syscall.ENOBUFS {
		t.Errorf("read(8): kernel %v, engine %v; want ENOBUFS", kerr, eerr)
	}
	// Overflow: 29 more records fit (3 queued + 29 = 32), the rest are lost.
	for range 40 {
		p.post(record.KeySetattr)
	}
	kern, eng := p.drain(433)
	sameStream(t, "overflow", kern, eng)

	// Filter: only LINKED and UNLINKED with tag 7 pass.
	f, err := record.NewFilter(record.FilterEntry{
		Type: record.TypeKey, Subtypes: record.SubtypeSet(record.KeyLinked, record.KeyUnlinked),
		InfoMask: record.InfoID, InfoFilter: 7 << record.InfoIDShift,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.kp.SetFilter(f); err != nil {
		t.Fatal(err)
	}
	_ = p.eq.SetFilter(f)
	p.post(record.KeyUpdated)
	p.post(record.KeyUnlinked)
	p.post(record.KeySetattr)
	p.post(record.KeyLinked)
	kern, eng = p.drain(433)
	sameStream(t, "filtered", kern, eng)
	if len(kern) != 2 {
		t.Errorf("filter passed %d records, want 2", len(kern))
	}

	// Unwatch: a 16-byte removal record with the key's id and the tag.
	if err := p.kp.UnwatchKey(p.key); err != nil {
		t.Fatal(err)
	}
	if err := p.wl.Remove(p.eq, record.ObjectID(uint32(p.key))); err != nil {
		t.Fatal(err)
	}
	kern, eng = p.drain(433)
	sameStream(t, "removal", kern, eng)
	if errnoOf(p.kp.UnwatchKey(p.key)) != syscall.EBADSLT || errnoOf(p.wl.Remove(p.eq, record.ObjectID(uint32(p.key)))) != syscall.EBADSLT {
		t.Error("second unwatch is not EBADSLT on both")
	}
	if errnoOf(p.kp.WatchKey(p.ring, 1)) != syscall.EBUSY || errnoOf(p.wl.Add(p.eq, record.ObjectID(uint32(p.ring)), 1, watchq.CurrentCred())) != syscall.EBUSY {
		t.Error("duplicate watch is not EBUSY on both")
	}
}
