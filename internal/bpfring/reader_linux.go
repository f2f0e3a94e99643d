//go:build linux

package bpfring

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// Reader reads the records and the drop count of a loaded and attached
// program built with Maps and OutputOrDrop, and owns the program's
// collection and link.
type Reader struct {
	prefix string // of errors: the tracer package's name
	coll   *ebpf.Collection
	link   io.Closer // the program's attachment, a link.Link
	rd     *ringbuf.Reader
	drops  *ebpf.Map
	rec    ringbuf.Record
	seen   uint64 // drops already reported
	closed atomic.Bool
}

// NewReader opens the ring buffer events of coll, whose program l (a
// link.Link) attached, and finds its drop counter drops. Errors start with
// prefix. On an error it closes l and coll.
func NewReader(prefix string, coll *ebpf.Collection, l io.Closer, events, drops string) (*Reader, error) {
	rd, err := ringbuf.NewReader(coll.Maps[events])
	if err != nil {
		l.Close()
		coll.Close()
		return nil, fmt.Errorf("%s: ring buffer reader: %w", prefix, err)
	}
	return &Reader{prefix: prefix, coll: coll, link: l, rd: rd, drops: coll.Maps[drops]}, nil
}

// SetDeadline makes a blocked Read return an error wrapping
// os.ErrDeadlineExceeded at d; the zero time waits forever.
func (r *Reader) SetDeadline(d time.Time) { r.rd.SetDeadline(d) }

// Read waits for the next record and returns it; it stays valid until the
// next Read. After Close it returns an error matching os.ErrClosed (what
// cilium's ringbuf.Reader says: its ErrClosed is os.ErrClosed); the
// tracers built on it, a layer up, return watchq.ErrClosed, which matches
// os.ErrClosed too. One goroutine may call Read at a time.
func (r *Reader) Read() ([]byte, error) {
	if err := r.rd.ReadInto(&r.rec); err != nil {
		if r.closed.Load() && !errors.Is(err, os.ErrClosed) {
			err = fmt.Errorf("%w (%w)", err, os.ErrClosed)
		}
		return nil, fmt.Errorf("%s: read ring buffer: %w", r.prefix, err)
	}
	return r.rec.RawSample, nil
}

// Drops returns how many records the program dropped on a full ring buffer
// since the previous call.
func (r *Reader) Drops() (uint64, error) {
	var n uint64
	if err := r.drops.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("%s: read drop counter: %w", r.prefix, err)
	}
	d := n - r.seen
	r.seen = n
	return d, nil
}

// Dropped returns how many records the program dropped on a full ring
// buffer so far (the counter itself; Drops returns its growth).
func (r *Reader) Dropped() (uint64, error) {
	var n uint64
	if err := r.drops.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("%s: read drop counter: %w", r.prefix, err)
	}
	return n, nil
}

// Close closes the ring buffer, detaches the program and releases
// everything; a blocked Read returns an error matching os.ErrClosed.
// Later calls do nothing and return nil.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	err := r.rd.Close()
	r.link.Close()
	r.coll.Close()
	return err
}
