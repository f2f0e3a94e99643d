package shmring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// newPair makes a ring of pages over plain memory: the producer's and the
// consumer's views of the same bytes.
func newPair(t testing.TB, pages uint32) (*Producer, *Consumer, []byte, []byte) {
	mem := make([]byte, HeaderSize+int(pages)*PageSize)
	idx := make([]byte, IndexSize)
	p, err := NewProducer(mem, idx, pages)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(mem, idx)
	if err != nil {
		t.Fatal(err)
	}
	return p, c, mem, idx
}

// rec is a publisher record of n bytes (8..127) carrying seq.
func rec(n int, seq uint32) []byte {
	b := make([]byte, n)
	record.Header{Type: record.TypeUserFirst, Info: record.MakeInfo(n, 0, 0)}.Put(b)
	if n >= 12 {
		binary.LittleEndian.PutUint32(b[8:], seq)
	}
	return b
}

// TestWrap: records of every length pass through a one-page ring many
// times over, wrapping at every offset, in order and intact; Next takes
// one record, Read as many as fit; a closed, drained ring reads ErrClosed.
func TestWrap(t *testing.T) {
	p, c, _, _ := newPair(t, 1)
	buf := make([]byte, 300)
	seq := uint32(0)
	for round := range 2000 {
		var batch []byte
		for k := range 3 {
			batch = append(batch, rec(12+(round*7+k*31)%116, seq+uint32(k))...)
		}
		if free, _ := p.Free(); free < len(batch) {
			t.Fatalf("round %d: free %d", round, free)
		}
		p.Put(batch)
		got := 0
		for got < 3 {
			var n int
			var err error
			if round%2 == 0 {
				n, _, err = c.Next(buf)
			} else {
				n, _, err = c.Read(buf)
			}
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			for r, err := range record.Records(buf[:n]) {
				if err != nil {
					t.Fatal(err)
				}
				if s := binary.LittleEndian.Uint32(r[8:]); s != seq {
					t.Fatalf("round %d: seq %d, want %d", round, s, seq)
				}
				seq++
				got++
			}
			if round%2 == 0 && n != len(rec(12+(round*7+(got-1)*31)%116, 0)) {
				t.Fatalf("Next read %d bytes", n)
			}
		}
		if _, _, err := c.Read(buf); err != watchq.ErrWouldBlock {
			t.Fatalf("empty ring: %v", err)
		}
	}
	p.Put(rec(100, 0))
	if _, _, err := c.Read(buf[:99]); err != watchq.ErrBufferTooSmall {
		t.Fatalf("short buffer: %v", err)
	}
	p.Close()
	if n, _, err := c.Read(buf); n != 100 || err != nil {
		t.Fatalf("after close: %d %v", n, err)
	}
	if _, _, err := c.Read(buf); err != watchq.ErrClosed {
		t.Fatalf("closed ring: %v", err)
	}
}

// TestFull: the producer never gets more room than the consumer has
// returned, and sees the consumer's tail move.
func TestFull(t *testing.T) {
	p, c, _, _ := newPair(t, 1)
	for {
		free, _ := p.Free()
		if free < 64 {
			break
		}
		p.Put(rec(64, 0))
	}
	if free, _ := p.Free(); free != PageSize%64 {
		t.Fatalf("full ring has %d free", free)
	}
	_, tail := p.Free()
	p.SetWaiting(true)
	buf := make([]byte, 64)
	if _, kick, err := c.Next(buf); err != nil || !kick {
		t.Fatalf("read from full ring: kick %v, %v", kick, err)
	}
	if free, now := p.Free(); free != 64 || now == tail {
		t.Fatalf("after one read: free %d, tail %d (was %d)", free, now, tail)
	}
}

// TestSleep: Sleep refuses to sleep when records are there, and Put
// reports a sleeping consumer.
func TestSleep(t *testing.T) {
	p, c, _, _ := newPair(t, 1)
	if c.Sleep() {
		t.Fatal("empty ring: Sleep says ready")
	}
	if !p.Put(rec(8, 0)) {
		t.Fatal("Put to a sleeping consumer did not ask for a wake-up")
	}
	c.Awake()
	if p.Put(rec(8, 0)) {
		t.Fatal("Put to an awake consumer asked for a wake-up")
	}
	if !c.Sleep() {
		t.Fatal("non-empty ring: Sleep says block")
	}
}

// TestWakeOnce: a sleeping consumer is woken once, however many Puts
// follow before it moves its tail; once it has read and sleeps again, the
// next Put wakes it again.
func TestWakeOnce(t *testing.T) {
	p, c, _, _ := newPair(t, 1)
	buf := make([]byte, PageSize)
	for round := range 3 {
		if c.Sleep() {
			t.Fatalf("round %d: empty ring: Sleep says ready", round)
		}
		if !p.Put(rec(16, 0)) {
			t.Fatalf("round %d: first Put to a sleeping consumer did not ask for a wake-up", round)
		}
		for i := range 3 {
			if p.Put(rec(16, 0)) {
				t.Fatalf("round %d: Put %d asked for a second wake-up before the consumer read", round, i+2)
			}
		}
		c.Awake()
		if n, _, err := c.Read(buf); err != nil || n != 4*16 {
			t.Fatalf("round %d: Read = %d, %v; want 64 bytes", round, n, err)
		}
	}
}

// TestWakeNotLost: a consumer that sleeps whenever the ring is empty and
// a producer that wakes it only when Put says so move 200 000 records in
// order; a lost wake-up would leave the consumer asleep (the test would
// hang). The channel stands for the wake eventfd.
func TestWakeNotLost(t *testing.T) {
	p, c, _, _ := newPair(t, 1)
	const total = 200000
	wake := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 256)
		for seq := uint32(0); seq < total; {
			n, _, err := c.Read(buf)
			if err == watchq.ErrWouldBlock {
				if !c.Sleep() {
					<-wake
					c.Awake()
				}
				continue
			}
			if err != nil {
				done <- err
				return
			}
			for off := 0; off < n; off += 16 {
				if got := binary.LittleEndian.Uint32(buf[off+8:]); got != seq {
					done <- fmt.Errorf("record %d, want %d", got, seq)
					return
				}
				seq++
			}
		}
		done <- nil
	}()
	for seq := uint32(0); seq < total; {
		if free, _ := p.Free(); free < 16 {
			runtime.Gosched()
			continue
		}
		if p.Put(rec(16, seq)) {
			select {
			case wake <- struct{}{}:
			default: // the eventfd's count is non-zero already
			}
		}
		seq++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// FuzzIndex: whatever the consumer writes into its index page, the
// producer's Free stays within the data area, so Put never writes
// outside it, and the consumer's own records are all it can lose.
func FuzzIndex(f *testing.F) {
	f.Add(uint64(0), uint32(0), uint16(10))
	f.Add(^uint64(0), uint32(1), uint16(3))
	f.Add(uint64(1)<<63, uint32(0xffffffff), uint16(200))
	f.Add(uint64(4097), uint32(2), uint16(64))
	f.Fuzz(func(t *testing.T, tail uint64, sleeping uint32, n uint16) {
		p, _, mem, idx := newPair(t, 1)
		guard := append([]byte(nil), mem[:HeaderSize]...)
		for i := range int(n) % 300 {
			binary.NativeEndian.PutUint64(idx[OffTail:], tail+uint64(i)*uint64(sleeping))
			binary.NativeEndian.PutUint32(idx[OffSleeping:], sleeping)
			free, _ := p.Free()
			if free < 0 || free > PageSize {
				t.Fatalf("tail %d: free %d", tail, free)
			}
			if free >= 24 {
				p.Put(rec(24, uint32(i)))
			}
		}
		// The header's fixed words are the producer's own.
		for _, off := range []int{OffMagic, OffVersion, OffDataOffset, OffDataSize} {
			if string(mem[off:off+4]) != string(guard[off:off+4]) {
				t.Fatalf("header word at %d changed", off)
			}
		}
		if binary.NativeEndian.Uint64(mem[OffHead:]) != p.Head() {
			t.Fatal("published head differs from the producer's")
		}
	})
}

// FuzzConsumer: a consumer over arbitrary ring bytes (a daemon it cannot
// trust either) never panics and returns only whole, valid records.
func FuzzConsumer(f *testing.F) {
	f.Add([]byte{1, 0, 0x80, 0, 12, 0, 0, 0, 1, 2, 3, 4}, uint64(12))
	f.Add([]byte{1, 0, 0x80, 0, 0x7f}, uint64(5000))
	f.Fuzz(func(t *testing.T, data []byte, head uint64) {
		_, c, mem, _ := newPair(t, 1)
		copy(mem[HeaderSize:], data)
		binary.NativeEndian.PutUint64(mem[OffHead:], head)
		buf := make([]byte, 512)
		for range 10 {
			n, _, err := c.Read(buf)
			if err != nil {
				var re *record.RecordError
				if !errors.As(err, &re) && err != watchq.ErrWouldBlock {
					t.Fatalf("error %v", err)
				}
				return
			}
			for _, err := range record.Records(buf[:n]) {
				if err != nil {
					t.Fatalf("invalid record returned: %v", err)
				}
			}
		}
	})
}
