//go:build linux

package uevent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/socket"
	"github.com/watchq/watchq"
	"golang.org/x/sys/unix"
)

// KernelGroup is the multicast group the kernel broadcasts uevents to
// (kobject_uevent_net_broadcast sends to group 1); udevd re-broadcasts
// processed events to group 2, which this package never joins.
const KernelGroup = 1

// DefaultReadBuffer is the receive buffer Dial asks for when
// Config.ReadBuffer is 0: 128 MiB, as systemd-udevd's monitor does
// (systemd PR #11389), because SO_RCVBUF alone is clamped to rmem_max.
const DefaultReadBuffer = 128 << 20

// Receive errors. Each is wrapped with detail; test with errors.Is.
var (
	// ErrOverrun: the kernel dropped datagrams because the receive buffer
	// was full (recvmsg's ENOBUFS, set by netlink_overrun). The socket stays
	// usable; Lost in the *OverrunError says how many were dropped.
	ErrOverrun = errors.New("uevent: receive buffer overrun")
	// ErrSpoofed: the datagram was not sent by the kernel (sender port id
	// != 0) and was dropped.
	ErrSpoofed = errors.New("uevent: datagram not from the kernel")
	// ErrTruncated: the datagram did not fit the buffer (MSG_TRUNC) and was
	// dropped.
	ErrTruncated = errors.New("uevent: datagram truncated")
)

// OverrunError reports an overrun and how many datagrams the kernel says it
// dropped since the last report (from SO_MEMINFO's SK_MEMINFO_DROPS, which
// netlink_overrun increments; at least 1).
type OverrunError struct{ Lost uint64 }

func (e *OverrunError) Error() string {
	return fmt.Sprintf("uevent: receive buffer overrun: %d datagrams lost", e.Lost)
}

// Unwrap returns ErrOverrun and ENOBUFS.
func (e *OverrunError) Unwrap() []error { return []error{ErrOverrun, unix.ENOBUFS} }

// SpoofedError reports a dropped datagram from a non-kernel sender.
type SpoofedError struct{ PortID uint32 }

func (e *SpoofedError) Error() string {
	return fmt.Sprintf("uevent: dropped datagram from port id %d, not the kernel", e.PortID)
}

// Unwrap returns ErrSpoofed.
func (e *SpoofedError) Unwrap() error { return ErrSpoofed }

// Config configures Dial. The zero value is the default.
type Config struct {
	// ReadBuffer is the receive buffer size in bytes, set with
	// SO_RCVBUFFORCE and, failing that (no CAP_NET_ADMIN), SO_RCVBUF, which
	// the kernel clamps to net.core.rmem_max. 0 means DefaultReadBuffer; a
	// negative value leaves the kernel default.
	ReadBuffer int
	// NetNS, if non-zero, is a network namespace file descriptor to open the
	// socket in (the kernel sends device uevents to sockets of every
	// namespace; a userspace sender reaches only its own namespace).
	NetNS int
}

// Conn is a NETLINK_KOBJECT_UEVENT socket joined to the kernel group. One
// goroutine may call Receive at a time.
type Conn struct {
	c  *socket.Conn
	rc syscall.RawConn

	// Receive scratch and the functions run on the descriptor, made once
	// so that Receive does not allocate.
	from   unix.RawSockaddrNetlink
	iov    unix.Iovec
	msg    unix.Msghdr
	n      int                          // recvmsg's result
	errno  unix.Errno                   // recvmsg's or getsockopt's error
	mi     [unix.SK_MEMINFO_VARS]uint32 // SO_MEMINFO
	miLen  uint32
	recvFn func(fd uintptr) bool
	memFn  func(fd uintptr)

	// Loss accounting, owned by the Receive goroutine (see Receive).
	drops    uint32    // SK_MEMINFO_DROPS already counted (reported or pending)
	pending  uint64    // drops counted, returned by the next Receive
	watch    bool      // an overrun episode is under way: the queue has not been seen empty since
	settle   int       // the episode ended: index in settleDelays of the next late check, or -1
	settleAt time.Time // when that check is due

	deadline   atomic.Int64 // SetReadDeadline's deadline, in Unix nanoseconds; 0 is none
	readBuffer int
	closed     atomic.Bool
}

// settleDelays are the checks of SK_MEMINFO_DROPS after an overrun episode
// ended (the queue drained), counted from the end or from the last check
// that found late drops. netlink_overrun increments sk_drops after it has
// decided to drop (and, for the first drop of an episode, after it has set
// sk_err and woken the reader), so a reader can see the drained queue, or
// ENOBUFS, a moment before the counter moves. Without these checks such
// a drop would be reported only with the next datagram, which on a quiet
// machine may never come.
var settleDelays = [...]time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second}

// Dial opens a uevent socket bound to the kernel group.
func Dial(cfg Config) (*Conn, error) {
	c, err := socket.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_KOBJECT_UEVENT, "uevent", &socket.Config{NetNS: cfg.NetNS})
	if err != nil {
		return nil, fmt.Errorf("uevent: socket: %w", err)
	}
	// Port id 0: let the kernel pick a unique one (netlink_autobind), so
	// several listeners in one process never collide on getpid().
	if err := c.Bind(&unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: KernelGroup}); err != nil {
		c.Close()
		return nil, fmt.Errorf("uevent: bind to group %d: %w", KernelGroup, err)
	}
	rb := cfg.ReadBuffer
	if rb == 0 {
		rb = DefaultReadBuffer
	}
	if rb > 0 {
		// socket.Conn.SetReadBuffer tries SO_RCVBUFFORCE, then SO_RCVBUF.
		if err := c.SetReadBuffer(rb); err != nil {
			c.Close()
			return nil, fmt.Errorf("uevent: set receive buffer to %d: %w", rb, err)
		}
	}
	uc := &Conn{c: c, settle: -1}
	if uc.rc, err = c.SyscallConn(); err != nil {
		c.Close()
		return nil, fmt.Errorf("uevent: %w", err)
	}
	uc.recvFn, uc.memFn = uc.recv, uc.getMeminfo
	if uc.readBuffer, err = c.ReadBuffer(); err != nil {
		c.Close()
		return nil, fmt.Errorf("uevent: read back receive buffer: %w", err)
	}
	return uc, nil
}

// ReadBuffer is the receive buffer the kernel granted (SO_RCVBUF reads back
// twice the requested size, the kernel's bookkeeping allowance).
func (c *Conn) ReadBuffer() int { return c.readBuffer }

// Close closes the socket; a blocked Receive returns an error matching
// watchq.ErrClosed. Later calls do nothing and return nil.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.c.Close()
}

// SetReadDeadline sets the deadline for Receive; the zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = max(t.UnixNano(), 1)
	}
	c.deadline.Store(ns)
	return c.c.SetReadDeadline(t)
}

// userDeadline is the deadline SetReadDeadline set.
func (c *Conn) userDeadline() time.Time {
	if ns := c.deadline.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Receive waits for one datagram and copies it into p, which should be
// MaxSize bytes. It returns the datagram's length, or:
//   - an *OverrunError (ErrOverrun, ENOBUFS) when the kernel dropped
//     datagrams; the socket stays usable and the next call receives again;
//   - a *SpoofedError (ErrSpoofed) for a datagram whose sender port id is
//     not 0: only the kernel sends from port id 0 (netlink_kernel_create
//     sockets have portid 0; a user socket always has a non-zero one);
//   - an error wrapping ErrTruncated for a datagram longer than p
//     (MSG_TRUNC in msg_flags);
//   - ctx's error, wrapped, when ctx ends;
//   - an error matching watchq.ErrClosed (and os.ErrClosed) after Close.
//
// With a ctx that can never be cancelled, Receive does not allocate.
//
// Loss accounting. The kernel counts every datagram it drops in sk_drops
// (netlink_overrun; read with SO_MEMINFO) and reports only the first drop
// of an episode, as ENOBUFS: netlink_overrun sets NETLINK_S_CONGESTED, and
// every datagram that arrives until a recvmsg finds the queue empty
// (netlink_rcv_wake) is dropped silently. So from an ENOBUFS until the
// queue is seen empty, Receive reads SK_MEMINFO_DROPS after every recvmsg,
// and reports what it counted; once the queue is empty it checks again
// after 10 ms, 100 ms and 1 s (settleDelays), waking from recvmsg for it
// if no datagram comes, so that drops are reported without waiting for
// the next uevent. Drops counted after a received datagram are returned
// by the next call. The Lost counts add up to every datagram the kernel
// dropped on this socket.
func (c *Conn) Receive(ctx context.Context, p []byte) (int, error) {
	for {
		if c.pending != 0 {
			n := c.pending
			c.pending = 0
			return 0, &OverrunError{Lost: n}
		}
		n, mflags, err := c.recvmsg(ctx, p)
		if err != nil {
			switch {
			case errors.Is(err, unix.ENOBUFS):
				c.watch = true
				if !c.account() {
					// No SO_MEMINFO: ENOBUFS means at least one.
					c.pending++
				}
				// A zero count means sk_drops has not moved yet: the
				// watch, then the settle checks, will see it move.
				continue
			case c.settleDue(err):
				if c.account() && c.pending == 0 {
					if c.settle++; c.settle < len(settleDelays) {
						c.settleAt = time.Now().Add(settleDelays[c.settle])
					} else {
						c.settle = -1
					}
				}
				continue
			}
			if c.closed.Load() {
				err = watchq.ErrClosed
			}
			return 0, fmt.Errorf("uevent: receive: %w", err)
		}
		if c.watch || c.settle >= 0 {
			c.account()
		}
		if c.from.Pid != 0 {
			return 0, &SpoofedError{PortID: c.from.Pid}
		}
		if mflags&unix.MSG_TRUNC != 0 {
			return 0, fmt.Errorf("%w: more than %d bytes", ErrTruncated, len(p))
		}
		return n, nil
	}
}

// recvmsg receives one datagram into p, through the runtime poller. While
// a settle check is pending the socket's read deadline is the earlier of
// the check's and the caller's (SetReadDeadline), and recvmsg returns
// os.ErrDeadlineExceeded at either. A ctx that can be cancelled is
// watched with context.AfterFunc, which moves the deadline to the past.
func (c *Conn) recvmsg(ctx context.Context, p []byte) (int, int32, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	restore := false
	if c.settle >= 0 {
		d := c.settleAt
		if u := c.userDeadline(); !u.IsZero() && u.Before(d) {
			d = u
		}
		if err := c.c.SetReadDeadline(d); err != nil {
			return 0, 0, err
		}
		restore = true
	}
	if ctx.Done() != nil {
		done := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			c.c.SetReadDeadline(time.Unix(0, 1))
			close(done)
		})
		defer func() {
			if !stop() {
				<-done // the deadline was moved: put it back
				c.c.SetReadDeadline(c.userDeadline())
			}
		}()
	}
	c.iov.Base = unsafe.SliceData(p)
	c.iov.SetLen(len(p))
	c.errno = 0
	err := c.rc.Read(c.recvFn)
	if restore {
		c.c.SetReadDeadline(c.userDeadline())
	}
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		return 0, 0, err
	case c.errno != 0:
		return 0, 0, os.NewSyscallError("recvmsg", c.errno)
	}
	return c.n, c.msg.Flags, nil
}

// recv is the recvmsg(2) run by the poller: raw, into reused storage
// (unix.Recvmsg allocates a Sockaddr per call). It reports false to wait
// for the descriptor to become readable.
func (c *Conn) recv(fd uintptr) bool {
	c.from = unix.RawSockaddrNetlink{}
	c.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&c.from)), Namelen: unix.SizeofSockaddrNetlink, Iov: &c.iov, Iovlen: 1}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), 0)
	switch e {
	case unix.EAGAIN, unix.EINTR:
		return false
	}
	c.n, c.errno = int(r), e
	return true
}

// getMeminfo is getsockopt(SOL_SOCKET, SO_MEMINFO) into c.mi.
func (c *Conn) getMeminfo(fd uintptr) {
	c.miLen = uint32(len(c.mi) * 4)
	_, _, c.errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&c.mi[0])), uintptr(unsafe.Pointer(&c.miLen)), 0)
}

// settleDue reports whether recvmsg's error is the settle check's deadline
// rather than only the caller's (SetReadDeadline's, when it is earlier).
// When the caller's deadline or ctx is due too, the check runs first and
// the next recvmsg returns the caller's error.
func (c *Conn) settleDue(err error) bool {
	return c.settle >= 0 && !time.Now().Before(c.settleAt) && errors.Is(err, os.ErrDeadlineExceeded)
}

// account reads getsockopt(SO_MEMINFO) (sk_get_meminfo), adds the drops
// since the last read (SK_MEMINFO_DROPS, which netlink_overrun increments)
// to c.pending and moves the episode along: a drained queue
// (SK_MEMINFO_RMEM_ALLOC 0: the last recvmsg cleared NETLINK_S_CONGESTED)
// ends the watch and starts the settle checks; drops found by a settle
// check start them over. It reports false if SO_MEMINFO cannot be read.
func (c *Conn) account() bool {
	c.errno = 0
	if err := c.rc.Control(c.memFn); err != nil || c.errno != 0 || c.miLen < (unix.SK_MEMINFO_DROPS+1)*4 {
		c.watch, c.settle = false, -1
		return false
	}
	d := c.mi[unix.SK_MEMINFO_DROPS]
	lost := d - c.drops // sk_drops is an atomic_t: it wraps
	c.drops = d
	c.pending += uint64(lost)
	switch {
	case c.watch && c.mi[unix.SK_MEMINFO_RMEM_ALLOC] == 0:
		c.watch = false
		c.settle, c.settleAt = 0, time.Now().Add(settleDelays[0])
	case !c.watch && c.settle >= 0 && lost != 0:
		c.settle, c.settleAt = 0, time.Now().Add(settleDelays[0])
	}
	return true
}

// Send sends a raw datagram to the kernel group of the socket's namespace,
// as a userspace process (its port id is not 0). Receivers using this
// package drop it as spoofed. It exists for tests and tools that check that
// behaviour.
func (c *Conn) Send(ctx context.Context, b []byte) error {
	if err := c.c.Sendto(ctx, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: KernelGroup}); err != nil {
		return fmt.Errorf("uevent: send to group %d: %w", KernelGroup, err)
	}
	return nil
}
