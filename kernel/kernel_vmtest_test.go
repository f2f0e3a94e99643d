//go:build vmtest

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// keyRec is a decoded 16-byte key record or meta record.
type keyRec struct {
	typ, sub, tag uint8
	length        int
	id, aux       uint32
}

func readRecs(t *testing.T, p *Pipe) []keyRec {
	t.Helper()
	var out []keyRec
	buf := make([]byte, 433) // keyutils' odd size: records are never split
	for {
		p.SetReadDeadline(deadlineSoon())
		n, err := p.Read(buf)
		if err != nil {
			return out
		}
		b := buf[:n]
		for len(b) > 0 {
			l := int(b[4] & 0x7f)
			if l < 8 || l > len(b) {
				t.Fatalf("bad record length %d in % x", l, b)
			}
			r := keyRec{typ: b[0], sub: b[3], tag: b[5], length: l}
			if l >= 16 {
				r.id = binary.LittleEndian.Uint32(b[8:])
				r.aux = binary.LittleEndian.Uint32(b[12:])
			}
			out = append(out, r)
			b = b[l:]
		}
	}
}

func deadlineSoon() time.Time { return time.Now().Add(200 * time.Millisecond) }

func newRing(t *testing.T) int32 {
	id, err := unix.AddKey("keyring", fmt.Sprintf("wq-kernel-%s", t.Name()), nil, unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		t.Fatal(err)
	}
	unix.KeyctlSetperm(id, 0x3f3f0000)
	t.Cleanup(func() { unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_USER_KEYRING, 0, 0) })
	return int32(id)
}

func openPipe(t *testing.T, notes int) *Pipe {
	p, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.SetSize(notes); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVMPipeKeyRecords(t *testing.T) {
	if err := Probe(); err != nil {
		t.Fatal(err)
	}
	p := openPipe(t, 256)
	if err := p.SetSize(256); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second SetSize: %v, want EBUSY", err)
	}
	if err := p.SetFilter(record.TypeFilter(record.TypeKey)); err != nil {
		t.Fatal(err)
	}
	ring := newRing(t)
	if err := p.WatchKey(ring, 0x42); err != nil {
		t.Fatal(err)
	}
	if err := p.WatchKey(ring, 0x43); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second WatchKey: %v, want EBUSY", err)
	}
	k, err := unix.AddKey("user", "wq-a", []byte("1"), int(ring))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.UnwatchKey(ring); err != nil {
		t.Fatal(err)
	}
	if err := p.UnwatchKey(ring); !errors.Is(err, syscall.EBADSLT) {
		t.Errorf("second UnwatchKey: %v, want EBADSLT", err)
	}
	got := readRecs(t, p)
	want := []keyRec{
		{typ: 1, sub: 2, tag: 0x42, length: 16, id: uint32(ring), aux: uint32(k)}, // LINKED
		{typ: 0, sub: 0, tag: 0x42, length: 16, id: uint32(ring)},                 // REMOVAL, id = serial (low half)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records %+v, want %+v", got, want)
	}
}

// TestVMPipeFilterAndLoss: a LINKED-only filter passes one record of an
// add/unlink/clear sequence; a 1-note queue (32 after rounding) loses the
// 8 updates over capacity and read() reports one 8-byte loss record.
func TestVMPipeFilterAndLoss(t *testing.T) {
	p := openPipe(t, 256)
	if err := p.SetFilter(record.TypeFilter(record.TypeKey, record.KeyLinked)); err != nil {
		t.Fatal(err)
	}
	ring := newRing(t)
	p.WatchKey(ring, 1)
	k, _ := unix.AddKey("user", "wq-f", []byte("1"), int(ring))
	unix.KeyctlInt(unix.KEYCTL_UNLINK, k, int(ring), 0, 0)
	unix.KeyctlInt(unix.KEYCTL_CLEAR, int(ring), 0, 0, 0)
	if got := readRecs(t, p); len(got) != 1 || got[0].sub != 2 {
		t.Errorf("filtered: %+v, want one LINKED", got)
	}

	small := openPipe(t, 1)
	key, _ := unix.AddKey("user", "wq-loss", []byte("0"), int(ring))
	if err := small.WatchKey(int32(key), 3); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		unix.KeyctlBuffer(unix.KEYCTL_UPDATE, key, []byte(fmt.Sprint(i)), 0)
	}
	got := readRecs(t, small)
	if len(got) != 33 || got[32].typ != 0 || got[32].sub != 1 || got[32].length != 8 {
		t.Errorf("small queue: %d records (last %+v), want 32 and a loss", len(got), got[len(got)-1])
	}
}

// TestVMPipeClose: Close wakes a blocked Read with os.ErrClosed, every
// method then says os.ErrClosed, and a second Close returns nil.
func TestVMPipeClose(t *testing.T) {
	p, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Read(make([]byte, 128))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read woken by Close = %v, want os.ErrClosed", err)
	}
	if err := p.SetSize(32); !errors.Is(err, os.ErrClosed) {
		t.Errorf("SetSize after Close = %v, want os.ErrClosed", err)
	}
	if err := p.WatchKey(unix.KEY_SPEC_USER_KEYRING, 1); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WatchKey after Close = %v, want os.ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}
