//go:build linux

package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/internal/shmring"
	"golang.org/x/sys/unix"
)

// ringReader is a ring queue's consumer: the mappings of the ring's two
// memfds and its eventfds (docs/protocol.md "Shared-memory ring"). Every
// field is guarded by the queue's rmu.
type ringReader struct {
	c     *shmring.Consumer
	mem   []byte   // the data memfd, mapped PROT_READ; nil once closed
	idx   []byte   // the index memfd, mapped read-write
	wake  *os.File // the wake eventfd, non-blocking (the runtime's poller waits on it)
	space int      // the space eventfd, non-blocking
}

// CreateRingQueue is CreateQueue for a queue delivered through a
// shared-memory ring of pages 4096-byte pages (a power of two up to 256;
// 0 for DefaultRingPages) instead of a pipe: records arrive with no
// system call per packet, and the reader sleeps on an eventfd only when
// the ring is empty. Read, Next and Records behave as for a pipe queue;
// File and OpenFile have no pipe to give (nil, an error).
func (c *Client) CreateRingQueue(ctx context.Context, size, pages int) (*Queue, error) {
	op := protocol.OpCreateRing.String()
	if pages == 0 {
		pages = DefaultRingPages
	}
	if size < 0 || size > 1<<31-1 || pages < 0 || pages > 1<<31-1 {
		return nil, &Error{Op: op, Errno: syscall.EINVAL, Reason: fmt.Sprintf("size %d, pages %d out of range", size, pages)}
	}
	body, fds, err := c.do(ctx, protocol.CreateRing{Size: uint32(size), Pages: uint32(pages)})
	if err != nil {
		return nil, err
	}
	defer closeAll(fds)
	r, err := protocol.ParseRingReply(body)
	if err == nil && len(fds) != protocol.RingFDs {
		err = fmt.Errorf("watchq client: %s reply carried %d fds, want %d", op, len(fds), protocol.RingFDs)
	}
	if err != nil {
		return nil, err
	}
	rr, err := openRing(fds, r.Pages)
	if err != nil {
		return nil, fmt.Errorf("watchq client: %s: %w", op, err)
	}
	return &Queue{c: c, id: r.Queue, capacity: int(r.Capacity), rg: rr}, nil
}

// openRing maps the ring's memfds and takes its own copies of the
// eventfds (the caller closes fds).
func openRing(fds []int, pages uint32) (rr *ringReader, err error) {
	rr = &ringReader{space: -1}
	defer func() {
		if err != nil {
			rr.close()
		}
	}()
	size := shmring.HeaderSize + int(pages)*shmring.PageSize
	if rr.mem, err = unix.Mmap(fds[protocol.RingData], 0, size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return rr, fmt.Errorf("mmap data: %w", err)
	}
	if rr.idx, err = unix.Mmap(fds[protocol.RingIndex], 0, shmring.IndexSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return rr, fmt.Errorf("mmap index: %w", err)
	}
	if rr.c, err = shmring.NewConsumer(rr.mem, rr.idx); err != nil {
		return rr, err
	}
	wfd, err := unix.FcntlInt(uintptr(fds[protocol.RingWake]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return rr, err
	}
	if err := unix.SetNonblock(wfd, true); err != nil {
		unix.Close(wfd)
		return rr, err
	}
	rr.wake = os.NewFile(uintptr(wfd), "watchq-ring-wake")
	if rr.space, err = unix.FcntlInt(uintptr(fds[protocol.RingSpace]), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		rr.space = -1
		return rr, err
	}
	return rr, unix.SetNonblock(rr.space, true)
}

// ringSpins is how many times a reader finding the ring empty yields the
// processor (runtime.Gosched) before it sleeps on the wake eventfd.
const ringSpins = 32

// read is Read (one false) or Next's read (one true) of a ring queue.
// With the ring empty it announces that it sleeps, looks again, and
// blocks on the wake eventfd (shmring's Sleep; the daemon writes the
// eventfd only while the flag is set).
//
// Preconditions: q.rmu is held.
func (q *Queue) ringRead(ctx context.Context, buf []byte, one bool) (int, error) {
	rr := q.rg
	spins := 0
	for {
		if q.closed.Load() || rr.mem == nil {
			return 0, watchq.ErrClosed
		}
		var n int
		var kick bool
		var err error
		if one {
			n, kick, err = rr.c.Next(buf)
		} else {
			n, kick, err = rr.c.Read(buf)
		}
		if kick {
			var v = [8]byte{1}
			unix.Write(rr.space, v[:]) // EAGAIN: the counter is non-zero already
		}
		if err != watchq.ErrWouldBlock {
			return n, err
		}
		if spins < ringSpins {
			// Yield to the daemon's pump (often in this process's
			// neighbour on the same core) before paying for a sleep and
			// a wake-up: the ring is refilled in batches.
			spins++
			runtime.Gosched()
			continue
		}
		spins = 0
		if rr.c.Sleep() {
			continue
		}
		err = rr.block(ctx)
		rr.c.Awake()
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if q.closed.Load() || errors.Is(err, os.ErrClosed) {
				return 0, watchq.ErrClosed
			}
			return 0, err
		}
	}
}

// block waits for the wake eventfd to be written, and drains it.
func (rr *ringReader) block(ctx context.Context) error {
	rc, err := rr.wake.SyscallConn()
	if err != nil {
		return err
	}
	defer followContext(ctx, rr.wake.SetReadDeadline)()
	var v [8]byte
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		_, rerr = unix.Read(int(fd), v[:])
		return rerr != unix.EAGAIN
	})
	if err == nil && rerr != nil && rerr != unix.EINTR {
		err = rerr
	}
	return err
}

// close unmaps the ring and closes its descriptors.
//
// Preconditions: q.rmu is held (no reader is inside the mappings), or the
// ring was never handed out.
func (rr *ringReader) close() {
	if rr.mem != nil {
		unix.Munmap(rr.mem)
		rr.mem = nil
	}
	if rr.idx != nil {
		unix.Munmap(rr.idx)
		rr.idx = nil
	}
	if rr.space >= 0 {
		unix.Close(rr.space)
		rr.space = -1
	}
}

// wakeClose closes the wake eventfd, which wakes a reader blocked on it;
// Close then takes rmu and calls close.
func (rr *ringReader) wakeClose() {
	if rr.wake != nil {
		rr.wake.Close()
	}
}
