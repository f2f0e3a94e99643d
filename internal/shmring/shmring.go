// Package shmring is the shared-memory ring watchqd can deliver a queue
// through (create-ring, docs/protocol.md "Shared-memory ring"): its layout
// and the two halves of its single-producer single-consumer protocol, over
// byte slices the caller has mapped. The daemon runs a Producer over its
// writable mapping of the data memfd; a client runs a Consumer over its
// read-only one. The index, the one thing the consumer writes, lives in a
// second memfd: the Producer reads it as untrusted input.
//
// Records lie back to back in the kernel's layout (package record), as
// one read(2) of a notification pipe returns them, in a data area of a
// power-of-two size; a record may wrap around its end. Head and tail are
// byte counts since the ring was made (they never wrap in practice: 2^64
// bytes); a record's offset in the data area is its count modulo the size.
//
// # Memory ordering
//
// Every shared word is read and written with sync/atomic, whose operations
// are sequentially consistent (Go memory model; on amd64 a store is XCHG,
// on arm64 STLR/LDAR). Record bytes are plain copies ordered by the head:
// the producer copies, then stores head; the consumer loads head, then
// copies — a release/acquire pair. Space is returned the same way through
// the tail.
//
// Wake-ups are the classic store-then-load handshake (Dekker): the
// consumer stores sleeping=1 and then loads head; the producer stores head
// and then loads sleeping. Under sequential consistency at least one of
// them sees the other's store: either the consumer sees the new head and
// does not block, or the producer sees sleeping and writes the eventfd.
// Acquire/release alone would not do (each side's load could pass its own
// store); C readers use __ATOMIC_SEQ_CST for these four accesses (see
// include/watchq/ring.h). The producer's wait for space mirrors it with
// waiting (in the data header) and tail (in the index).
package shmring

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// Layout of the data memfd: a header page, then the data area. Offsets in
// bytes; every word in host byte order.
const (
	OffMagic      = 0   // u32 Magic
	OffVersion    = 4   // u32 Version
	OffDataOffset = 8   // u32 where the data area starts (HeaderSize)
	OffDataSize   = 12  // u32 the data area's size, a power of two
	OffHead       = 64  // u64 bytes the producer has published
	OffClosed     = 128 // u32 1 once the queue is closed: after head is final
	OffWaiting    = 192 // u32 1 while the producer waits for space

	// HeaderSize is the header's size, where the data area starts.
	HeaderSize = 4096
)

// Layout of the index memfd, written by the consumer.
const (
	OffTail     = 0  // u64 bytes the consumer has consumed
	OffSleeping = 64 // u32 1 while the consumer blocks (or is about to) on the wake eventfd

	// IndexSize is the index memfd's size: one page of its own.
	IndexSize = 4096
)

// Magic and Version identify the layout in the header.
const (
	Magic   = 0x47525157 // "WQRG" in little-endian bytes
	Version = 1
)

// Data area sizes: pages of PageSize bytes, a power of two from 1 to
// MaxPages.
const (
	PageSize = 4096
	MaxPages = 256
)

// ValidPages reports whether a data area of n pages is allowed.
func ValidPages(n uint32) bool { return n >= 1 && n <= MaxPages && n&(n-1) == 0 }

func word32(b []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
func word64(b []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&b[off])) }

// copyIn copies src into the data area at count pos, wrapping.
func copyIn(data []byte, pos uint64, src []byte) {
	o := int(pos & uint64(len(data)-1))
	n := copy(data[o:], src)
	copy(data, src[n:])
}

// copyOut copies len(dst) bytes from the data area at count pos, wrapping.
func copyOut(dst, data []byte, pos uint64) {
	o := int(pos & uint64(len(data)-1))
	n := copy(dst, data[o:])
	copy(dst[n:], data)
}

// Producer is the daemon's half: it writes records into the data area
// and publishes them. One goroutine at a time uses it.
type Producer struct {
	hdr  []byte // the data memfd's header page, writable
	data []byte // the data area, writable
	idx  []byte // the consumer's index: untrusted
	head uint64 // bytes published; the only copy the producer trusts
	// kickHead is the head Put published when it last asked for a
	// wake-up, 0 before the first (see Put).
	kickHead uint64
}

// NewProducer lays out a ring in mem (the data memfd's mapping,
// HeaderSize plus pages*PageSize bytes, zeroed) and returns its producer;
// idx is the index memfd's mapping (IndexSize bytes).
func NewProducer(mem, idx []byte, pages uint32) (*Producer, error) {
	size := int(pages) * PageSize
	if !ValidPages(pages) || len(mem) < HeaderSize+size || len(idx) < IndexSize {
		return nil, fmt.Errorf("shmring: %d pages in a %d-byte mapping (index %d bytes)", pages, len(mem), len(idx))
	}
	ne := binary.NativeEndian
	ne.PutUint32(mem[OffVersion:], Version)
	ne.PutUint32(mem[OffDataOffset:], HeaderSize)
	ne.PutUint32(mem[OffDataSize:], uint32(size))
	atomic.StoreUint32(word32(mem, OffMagic), Magic)
	return &Producer{hdr: mem[:HeaderSize], data: mem[HeaderSize : HeaderSize+size], idx: idx[:IndexSize]}, nil
}

// Head returns the bytes published so far.
func (p *Producer) Head() uint64 { return p.head }

// Free returns the bytes the producer may write now, and the consumer's
// tail it is computed from (for a wait for the tail to move). It reads the
// tail once and believes it only as far as it is consistent: a tail ahead
// of the head, or further behind it than the ring's size, is garbage and
// counts as a full ring, so a consumer writing garbage only stops its own
// delivery (its engine queue then overflows, with loss records, as for a
// reader that stops reading a notification pipe). A tail consistent but
// wrong (claiming records it has not read) lets the producer overwrite
// that consumer's own unread records, nothing else: the producer writes
// only inside the data area, at its own head.
func (p *Producer) Free() (free int, tail uint64) {
	tail = atomic.LoadUint64(word64(p.idx, OffTail))
	used := p.head - tail
	if used > uint64(len(p.data)) {
		return 0, tail
	}
	return len(p.data) - int(used), tail
}

// Tail returns the consumer's tail as it stands.
func (p *Producer) Tail() uint64 { return atomic.LoadUint64(word64(p.idx, OffTail)) }

// Put copies recs, whole records back to back (an engine read), into the
// ring and publishes them, and reports whether the consumer sleeps and
// needs a wake-up: the caller then writes the wake eventfd.
//
// A sleeping consumer is woken once, not once per Put: after a wake-up
// that published head h, as long as the consumer's tail is behind h it
// has bytes to read that it must read before it can block again (it sees
// them whenever it looks at the head after that wake-up), and the
// eventfd's count wakes an episode of sleep that began before it. So a
// Put asks again only once the tail has reached h. (Each wake-up is an
// eventfd write, a system call; a consumer on its way to sleep used to
// get one per engine read.) A consumer that writes garbage into its index
// only delays its own wake-ups.
//
// Preconditions: 0 < len(recs) <= Free()'s free.
func (p *Producer) Put(recs []byte) (wake bool) {
	copyIn(p.data, p.head, recs)
	p.head += uint64(len(recs))
	atomic.StoreUint64(word64(p.hdr, OffHead), p.head) // release the bytes; then load sleeping (see package doc)
	if atomic.LoadUint32(word32(p.idx, OffSleeping)) == 0 {
		return false
	}
	if tail := atomic.LoadUint64(word64(p.idx, OffTail)); tail < p.kickHead {
		return false
	}
	p.kickHead = p.head
	return true
}

// SetWaiting sets or clears the flag that asks the consumer to write the
// space eventfd when it moves its tail. After setting it, the caller looks
// at Free (or Tail) again before it blocks.
func (p *Producer) SetWaiting(on bool) {
	v := uint32(0)
	if on {
		v = 1
	}
	atomic.StoreUint32(word32(p.hdr, OffWaiting), v)
}

// Close marks the ring closed, after everything published: a consumer
// that has read up to the head then reads end of file. The caller writes
// the wake eventfd afterwards.
func (p *Producer) Close() {
	atomic.StoreUint32(word32(p.hdr, OffClosed), 1)
}

// Consumer is a client's half: it reads records out of the data area and
// returns their space. One goroutine at a time uses it.
type Consumer struct {
	hdr  []byte // the data memfd's header page, read-only
	data []byte // the data area, read-only
	idx  []byte // the index, writable
	tail uint64 // bytes consumed
}

// NewConsumer checks the header of mem, a read-only mapping of a ring's
// data memfd, and returns its consumer; idx is the index mapping.
func NewConsumer(mem, idx []byte) (*Consumer, error) {
	if len(mem) < HeaderSize || len(idx) < IndexSize {
		return nil, fmt.Errorf("shmring: mapping of %d bytes, index of %d", len(mem), len(idx))
	}
	ne := binary.NativeEndian
	magic, ver := atomic.LoadUint32(word32(mem, OffMagic)), ne.Uint32(mem[OffVersion:])
	off, size := ne.Uint32(mem[OffDataOffset:]), ne.Uint32(mem[OffDataSize:])
	switch {
	case magic != Magic || ver != Version:
		return nil, fmt.Errorf("shmring: magic %#x version %d, want %#x %d", magic, ver, Magic, Version)
	case off != HeaderSize || size == 0 || size&(size-1) != 0 || uint64(off)+uint64(size) > uint64(len(mem)):
		return nil, fmt.Errorf("shmring: data area of %d bytes at %d in a %d-byte mapping", size, off, len(mem))
	}
	c := &Consumer{hdr: mem[:HeaderSize], data: mem[off : off+size], idx: idx[:IndexSize]}
	c.tail = atomic.LoadUint64(word64(idx, OffTail))
	return c, nil
}

// Size returns the data area's size in bytes.
func (c *Consumer) Size() int { return len(c.data) }

// available returns the bytes published and not yet consumed, and whether
// the ring is closed (read before head, so a closed ring's head is final).
func (c *Consumer) available() (int, bool, error) {
	closed := atomic.LoadUint32(word32(c.hdr, OffClosed)) != 0
	avail := atomic.LoadUint64(word64(c.hdr, OffHead)) - c.tail
	if avail > uint64(len(c.data)) {
		return 0, closed, &record.RecordError{Reason: fmt.Sprintf("ring head %d bytes past tail, size %d", avail, len(c.data))}
	}
	return int(avail), closed, nil
}

// Read copies as many whole records as are published and fit into buf,
// as read(2) of a notification pipe does, and returns their space to the
// producer. kick reports that the producer waits for space: the caller
// then writes the space eventfd. With nothing published Read returns
// watchq.ErrWouldBlock, or watchq.ErrClosed once the ring is closed; if
// the next record does not fit in buf, watchq.ErrBufferTooSmall. A
// malformed record is a *record.RecordError.
func (c *Consumer) Read(buf []byte) (n int, kick bool, err error) { return c.read(buf, false) }

// Next is Read of one record at most.
func (c *Consumer) Next(buf []byte) (n int, kick bool, err error) { return c.read(buf, true) }

func (c *Consumer) read(buf []byte, one bool) (n int, kick bool, err error) {
	avail, closed, err := c.available()
	if err != nil {
		return 0, false, err
	}
	mask := uint64(len(c.data) - 1)
	for n < avail && !(one && n > 0) {
		// The length is bits 0..6 of info, the header's byte 4: one
		// byte, wherever the record wraps.
		l := int(uint32(c.data[(c.tail+uint64(n)+4)&mask]) & record.InfoLength)
		if l < record.HeaderSize || l > avail-n {
			if n > 0 {
				break
			}
			return 0, false, &record.RecordError{Reason: fmt.Sprintf("ring record of length %d with %d bytes published", l, avail-n)}
		}
		if l > len(buf)-n {
			break
		}
		n += l
	}
	switch {
	case n > 0:
		// The records found lie back to back: one copy (two where they
		// wrap) instead of one per record.
		copyOut(buf[:n], c.data, c.tail)
		c.tail += uint64(n)
		atomic.StoreUint64(word64(c.idx, OffTail), c.tail) // return the space; then load waiting
		return n, atomic.LoadUint32(word32(c.hdr, OffWaiting)) != 0, nil
	case avail > 0:
		return 0, false, watchq.ErrBufferTooSmall
	case closed:
		return 0, false, watchq.ErrClosed
	}
	return 0, false, watchq.ErrWouldBlock
}

// Sleep announces that the consumer is about to block on the wake
// eventfd, then looks again: it reports true if records (or the close)
// arrived meanwhile, having cleared the flag, and the caller reads instead
// of blocking. After a false, the caller blocks and calls Awake when it
// wakes.
func (c *Consumer) Sleep() (ready bool) {
	atomic.StoreUint32(word32(c.idx, OffSleeping), 1) // then load head (see package doc)
	avail, closed, err := c.available()
	if avail > 0 || closed || err != nil {
		c.Awake()
		return true
	}
	return false
}

// Awake clears the sleeping flag.
func (c *Consumer) Awake() { atomic.StoreUint32(word32(c.idx, OffSleeping), 0) }
