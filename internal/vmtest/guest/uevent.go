//go:build linux

package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Uevent is one kernel uevent datagram, as lib/kobject_uevent.c sends it on
// NETLINK_KOBJECT_UEVENT multicast group 1: a header "ACTION@DEVPATH\0"
// followed by "KEY=VALUE\0" pairs (ACTION, DEVPATH, SUBSYSTEM, SEQNUM, …).
type Uevent struct {
	Action  string            // from the header, e.g. "add", "remove", "bind"
	DevPath string            // from the header, e.g. "/devices/pci0000:00/…/usb1/1-1"
	Env     map[string]string // the KEY=VALUE pairs
	Raw     []byte            // the datagram exactly as received
}

// ParseUevent parses a kernel uevent datagram. It rejects udev's re-broadcast
// format (which starts with "libudev\0"), since only the kernel's is expected.
func ParseUevent(raw []byte) (*Uevent, error) {
	if bytes.HasPrefix(raw, []byte("libudev\x00")) {
		return nil, errors.New("uevent: udev (libudev) message, not a kernel uevent")
	}
	fields := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	action, devpath, ok := strings.Cut(fields[0], "@")
	if !ok || action == "" || devpath == "" {
		return nil, fmt.Errorf("uevent: header %q is not ACTION@DEVPATH", fields[0])
	}
	u := &Uevent{Action: action, DevPath: devpath, Env: map[string]string{}, Raw: append([]byte(nil), raw...)}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("uevent: field %q is not KEY=VALUE", f)
		}
		u.Env[k] = v
	}
	if a := u.Env["ACTION"]; a != "" && a != action {
		return nil, fmt.Errorf("uevent: header action %q but ACTION=%s", action, a)
	}
	return u, nil
}

// String returns a one-line summary, e.g. "add@/devices/… usb/usb_device".
func (u *Uevent) String() string {
	s := u.Action + "@" + u.DevPath + " " + u.Env["SUBSYSTEM"]
	if t := u.Env["DEVTYPE"]; t != "" {
		s += "/" + t
	}
	return s
}

// UeventListener receives kernel uevents from a NETLINK_KOBJECT_UEVENT socket
// bound to multicast group 1 (the kernel's; udev re-broadcasts on group 2).
type UeventListener struct {
	f *os.File
}

// ListenUevents opens a uevent socket. Open it before triggering the action
// whose events you want: the kernel does not queue events for later sockets.
func ListenUevents() (*UeventListener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// A burst of hot-plug events (usb, interface, hid, input, scsi, block)
	// must not overflow the default receive buffer while the test is busy.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent socket bind group 1: %w", err)
	}
	// A non-blocking fd handed to os.NewFile joins the netpoller, so reads
	// honour deadlines.
	return &UeventListener{f: os.NewFile(uintptr(fd), "uevent")}, nil
}

// Close closes the socket.
func (l *UeventListener) Close() error { return l.f.Close() }

// Read returns the next uevent, or ctx's error when it ends first.
func (l *UeventListener) Read(ctx context.Context) (*Uevent, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		l.f.SetReadDeadline(d)
	} else {
		l.f.SetReadDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { l.f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("uevent read: %w", err)
		}
		if rerr != nil {
			return nil, fmt.Errorf("uevent recv: %w", rerr)
		}
		u, err := ParseUevent(buf[:n])
		if err != nil {
			continue // not a kernel uevent; ignore
		}
		return u, nil
	}
}

// WaitFor reads uevents until match returns true and returns that event
// together with every event read on the way (including the match).
func (l *UeventListener) WaitFor(ctx context.Context, match func(*Uevent) bool) (*Uevent, []*Uevent, error) {
	var seen []*Uevent
	for {
		u, err := l.Read(ctx)
		if err != nil {
			return nil, seen, err
		}
		seen = append(seen, u)
		if match(u) {
			return u, seen, nil
		}
	}
}

// Match returns a matcher for WaitFor: the action must equal action and each
// "KEY=VALUE" in env must be present.
func Match(action string, env ...string) func(*Uevent) bool {
	return func(u *Uevent) bool {
		if u.Action != action {
			return false
		}
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			if u.Env[k] != v {
				return false
			}
		}
		return true
	}
}
