package daemon

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/watchq/watchq"
	"golang.org/x/sys/unix"
)

// pidfdGetMntNamespace is PIDFD_GET_MNT_NAMESPACE, _IO(PIDFS_IOCTL_MAGIC,
// 3) (include/uapi/linux/pidfd.h, Linux 6.11): an nsfs file of the mount
// namespace of the process a pidfd refers to.
const pidfdGetMntNamespace = 0xff03

// namespace returns the mount namespace the client lives in now, for one
// request.
//
// The client is the process that connected (SO_PEERCRED's pid), taken as
// a pidfd (SO_PEERPIDFD, Linux 6.5), which refers to that process and no
// other for as long as it is open. The namespace comes from the pidfd
// (PIDFD_GET_MNT_NAMESPACE, 6.11) or, on kernels without that ioctl, from
// /proc/PID/ns/mnt followed by pidfd_send_signal(pidfd, 0): it succeeds
// only while the process has not been reaped, so the pid opened was not
// yet free to be reused by another process. The race avoided: the client
// exits, its pid goes to a process in another namespace (the host's, or a
// container's), and the daemon would watch — and resolve the client's
// paths in — a namespace the client never saw. A client that has exited
// is ESRCH.
//
// The one namespace file then serves for both the lookup of the path and
// the watch (the mount source joins it with setns(2) on its own locked
// thread and resolves the path there), so the two cannot name different
// namespaces, as two opens of /proc/PID/... could if the client moved
// between them.
func (c *conn) namespace() (Namespace, error) {
	ns := Namespace{FD: -1, UID: c.cred.UID}
	rc, err := c.nc.SyscallConn()
	if err != nil {
		return ns, err
	}
	pidfd := -1
	var perr error
	if err := rc.Control(func(fd uintptr) {
		pidfd, perr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		return ns, err
	}
	gone := func(err error) error {
		if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
			return &watchq.Errno{Errno: syscall.ESRCH, Reason: fmt.Sprintf(
				"the process that connected (pid %d) has exited: its mount namespace cannot be known", c.cred.PID)}
		}
		return &watchq.Errno{Errno: syscall.EIO, Reason: fmt.Sprintf("the mount namespace of pid %d: %v", c.cred.PID, err)}
	}
	switch {
	case errors.Is(perr, unix.ENOPROTOOPT):
		return ns, &watchq.Errno{Errno: syscall.EOPNOTSUPP, Reason: fmt.Sprintf(
			"SO_PEERPIDFD: %v: mount watches need Linux 6.5 to know the client's mount namespace", perr)}
	case errors.Is(perr, unix.EINVAL):
		// Kernels that make no pidfd of a reaped process
		// (pidfd_prepare: the pid has no task left).
		return ns, gone(unix.ESRCH)
	case perr != nil:
		return ns, gone(perr)
	}
	defer unix.Close(pidfd)
	nsfd, err := unix.IoctlRetInt(pidfd, pidfdGetMntNamespace)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		// Before 6.11: /proc, then the check that the pid was still
		// the client's when it was opened.
		nsfd, err = unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", c.cred.PID), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			if serr := unix.PidfdSendSignal(pidfd, 0, nil, 0); serr != nil {
				unix.Close(nsfd)
				err = serr
			}
		}
	}
	if err != nil {
		return ns, gone(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(nsfd, &st); err != nil {
		unix.Close(nsfd)
		return ns, gone(err)
	}
	ns.FD, ns.Dev, ns.Ino = nsfd, st.Dev, st.Ino
	return ns, nil
}

// closeNamespace closes what namespace opened.
func closeNamespace(ns Namespace) {
	if ns.FD >= 0 {
		unix.Close(ns.FD)
	}
}
