//go:build linux

package uevent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mdlayher/socket"
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
	c *socket.Conn

	// Receive scratch, reused so Receive does not allocate.
	from      unix.RawSockaddrNetlink
	iov       unix.Iovec
	msg       unix.Msghdr
	drops     uint32 // SK_MEMINFO_DROPS when loss was last reported
	congested bool   // an overrun was reported and the queue has not drained yet
	pending   uint64 // drops counted while congested, reported by the next Receive

	readBuffer int
	closed     atomic.Bool
}

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
	uc := &Conn{c: c}
	if uc.readBuffer, err = c.ReadBuffer(); err != nil {
		c.Close()
		return nil, fmt.Errorf("uevent: read back receive buffer: %w", err)
	}
	return uc, nil
}

// ReadBuffer is the receive buffer the kernel granted (SO_RCVBUF reads back
// twice the requested size, the kernel's bookkeeping allowance).
func (c *Conn) ReadBuffer() int { return c.readBuffer }

// Close closes the socket; a blocked Receive returns an error.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.c.Close()
}

// SetReadDeadline sets the deadline for Receive.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// Receive waits for one datagram and copies it into p, which should be
// MaxSize bytes. It returns the datagram's length, or:
//   - an *OverrunError (ErrOverrun, ENOBUFS) when the kernel dropped
//     datagrams; the socket stays usable and the next call receives again;
//   - a *SpoofedError (ErrSpoofed) for a datagram whose sender port id is
//     not 0: only the kernel sends from port id 0 (netlink_kernel_create
//     sockets have portid 0; a user socket always has a non-zero one);
//   - an error wrapping ErrTruncated for a datagram longer than p
//     (MSG_TRUNC in msg_flags);
//   - ctx's error, wrapped, when ctx ends.
//
// With a ctx that can never be cancelled, Receive does not allocate.
//
// After an overrun the kernel drops every new datagram until the receive
// queue has drained (netlink_overrun sets NETLINK_S_CONGESTED, which only
// netlink_rcv_wake clears on an empty queue). Those drops are reported by
// a second *OverrunError, returned by the call after the one that drained
// the queue, so that the Lost counts add up to everything dropped.
func (c *Conn) Receive(ctx context.Context, p []byte) (int, error) {
	if c.pending != 0 {
		n := c.pending
		c.pending = 0
		return 0, &OverrunError{Lost: n}
	}
	var (
		n      int
		mflags int32
	)
	err := c.c.ReadFunc(ctx, "recvmsg", func(fd int) error {
		// A raw recvmsg(2) into reused storage: unix.Recvmsg allocates a
		// Sockaddr per call.
		c.from = unix.RawSockaddrNetlink{}
		c.iov.Base = unsafe.SliceData(p)
		c.iov.SetLen(len(p))
		c.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&c.from)), Namelen: unix.SizeofSockaddrNetlink, Iov: &c.iov, Iovlen: 1}
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&c.msg)), 0)
		if e != 0 {
			return e
		}
		n, mflags = int(r), c.msg.Flags
		return nil
	})
	if err != nil {
		if errors.Is(err, unix.ENOBUFS) {
			c.congested = true
			_, lost := c.meminfo()
			return 0, &OverrunError{Lost: max(lost, 1)}
		}
		return 0, fmt.Errorf("uevent: receive: %w", err)
	}
	if c.congested {
		if empty, lost := c.meminfo(); empty {
			c.congested, c.pending = false, lost
		}
	}
	if c.from.Pid != 0 {
		return 0, &SpoofedError{PortID: c.from.Pid}
	}
	if mflags&unix.MSG_TRUNC != 0 {
		return 0, fmt.Errorf("%w: more than %d bytes", ErrTruncated, len(p))
	}
	return n, nil
}

// meminfo reads getsockopt(SO_MEMINFO) (sk_get_meminfo): whether the
// receive queue is empty (SK_MEMINFO_RMEM_ALLOC == 0) and how many datagrams
// the kernel dropped since the last call (SK_MEMINFO_DROPS, which
// netlink_overrun increments).
func (c *Conn) meminfo() (empty bool, lost uint64) {
	var mi [unix.SK_MEMINFO_VARS]uint32
	n, err := c.c.GetsockoptBytes(unix.SOL_SOCKET, unix.SO_MEMINFO, unsafe.Slice((*byte)(unsafe.Pointer(&mi[0])), len(mi)*4))
	if err != nil || n < (unix.SK_MEMINFO_DROPS+1)*4 {
		return true, 0
	}
	d := mi[unix.SK_MEMINFO_DROPS]
	lost = uint64(d - c.drops)
	c.drops = d
	return mi[unix.SK_MEMINFO_RMEM_ALLOC] == 0, lost
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
