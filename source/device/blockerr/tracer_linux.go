//go:build linux

package blockerr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/bpfring"
	"golang.org/x/sys/unix"
)

// Tracefs mount points, in the order tried (the second is the pre-4.1
// location under debugfs).
var tracefsDirs = []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

// tracefs returns a tracefs directory with an events/ subdirectory,
// mounting tracefs on /sys/kernel/tracing if none is mounted yet.
func tracefs() (string, error) {
	for _, d := range tracefsDirs {
		if _, err := os.Stat(filepath.Join(d, "events")); err == nil {
			return d, nil
		}
	}
	d := tracefsDirs[0]
	if err := unix.Mount("nodev", d, "tracefs", 0, ""); err != nil {
		return "", fmt.Errorf("no tracefs mounted and mount -t tracefs on %s failed: %w", d, err)
	}
	return d, nil
}

// Event is one block request error.
type Event struct {
	Dev    uint32 // kernel-internal dev_t (major<<20 | minor), disk_devt()
	Sector uint64 // blk_rq_pos(): first 512-byte sector of the request
	Errno  int32  // blk_status_to_errno(): negative errno, e.g. -EIO
}

// Config configures Open. The zero value is the default.
type Config struct {
	// RingSize is the ring buffer size in bytes, a power of two multiple of
	// the page size; 0 means DefaultRingSize.
	RingSize int
}

// Tracer receives block request errors from the kernel.
type Tracer struct {
	// Tracepoint is the tracepoint attached to: "block/block_rq_error" or,
	// on kernels without it, "block/block_rq_complete".
	Tracepoint string

	r *bpfring.Reader
}

// Open loads the program, attaches it to block:block_rq_error (falling
// back to block:block_rq_complete) and opens the ring buffer. It needs
// CAP_BPF and CAP_PERFMON (or root) and a kernel with BPF ring buffers
// (5.8+).
func Open(cfg Config) (*Tracer, error) {
	ring := cfg.RingSize
	if ring == 0 {
		ring = DefaultRingSize
	}
	dir, err := tracefs()
	if err != nil {
		return nil, fmt.Errorf("blockerr: %w", err)
	}
	var (
		name   string
		format *Format
	)
	for _, tp := range []string{"block_rq_error", "block_rq_complete"} {
		f, err := os.Open(filepath.Join(dir, "events", "block", tp, "format"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("blockerr: %w", err)
		}
		format, err = ParseFormat(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("blockerr: %s: %w", tp, err)
		}
		name = tp
		break
	}
	if format == nil {
		return nil, fmt.Errorf("blockerr: neither block:block_rq_error nor block:block_rq_complete in %s/events: %w", dir, ebpf.ErrNotSupported)
	}
	layout, err := format.Layout()
	if err != nil {
		return nil, fmt.Errorf("blockerr: %w", err)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("blockerr: %w", err)
	}
	coll, err := ebpf.NewCollection(collectionSpec(layout, ring))
	if err != nil {
		return nil, fmt.Errorf("blockerr: load program for %s: %w", name, err)
	}
	l, err := link.Tracepoint("block", name, coll.Programs[progName], nil)
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("blockerr: attach to block:%s: %w", name, err)
	}
	r, err := bpfring.NewReader("blockerr", coll, l, eventsMap, dropsMap)
	if err != nil {
		return nil, err
	}
	return &Tracer{Tracepoint: "block/" + name, r: r}, nil
}

// SetDeadline makes a blocked Read return an error wrapping
// os.ErrDeadlineExceeded at t; the zero time waits forever.
func (t *Tracer) SetDeadline(d time.Time) { t.r.SetDeadline(d) }

// Read waits for the next error. After Close it returns an error matching
// watchq.ErrClosed (and os.ErrClosed). One goroutine may call Read at a
// time.
func (t *Tracer) Read(e *Event) error {
	s, err := t.r.Read()
	if err != nil {
		return closedErr(err)
	}
	if len(s) < eventSize {
		return fmt.Errorf("blockerr: %d-byte ring buffer record, want %d", len(s), eventSize)
	}
	e.Dev = binary.NativeEndian.Uint32(s[0:])
	e.Errno = int32(binary.NativeEndian.Uint32(s[4:]))
	e.Sector = binary.NativeEndian.Uint64(s[8:])
	return nil
}

// Drops returns how many errors the program dropped because the ring
// buffer was full since the previous call.
func (t *Tracer) Drops() (uint64, error) { return t.r.Drops() }

// Close detaches the program and releases everything; a blocked Read
// returns watchq.ErrClosed. Later calls do nothing and return nil.
func (t *Tracer) Close() error { return t.r.Close() }

// closedErr turns the ring buffer's "closed" (os.ErrClosed) into
// watchq.ErrClosed, which matches os.ErrClosed too.
func closedErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("blockerr: read: %w", watchq.ErrClosed)
	}
	return err
}
