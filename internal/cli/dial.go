package cli

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"syscall"

	"github.com/watchq/watchq/client"
)

// startHint is the command that starts watchqd where systemd runs it (the
// socket unit that make install ships).
const startHint = "start it: systemctl start watchqd.socket"

// dialWhy says briefly why the daemon at socket did not answer, with the
// command that fixes it: "not running (…; start it: …)" when
// nothing listens there, "socket exists but you may not connect (mode …
// owner:group; join group …)" when connect(2) was refused with EACCES
// (net/unix/af_unix.c unix_find_bsd: the inode's write permission), or
// the daemon's own refusal.
func dialWhy(socket string, err error) string {
	var errno syscall.Errno
	var ce *client.Error
	switch {
	case errors.As(err, &ce):
		return err.Error()
	case errors.As(err, &errno) && (errno == syscall.EACCES || errno == syscall.EPERM):
		return refusedWhy(socket, errno)
	case errors.As(err, &errno):
		return "not running (" + errno.Error() + "; " + startHint + ")"
	}
	return err.Error()
}

// refusedWhy explains an EACCES from connect(2): the socket's mode and
// owners, and the group to join when the group may connect; or the
// directory that refuses the path's lookup.
func refusedWhy(socket string, errno syscall.Errno) string {
	var st syscall.Stat_t
	if err := syscall.Stat(socket, &st); err != nil {
		return fmt.Sprintf("you may not reach the socket (%v; a directory above it refuses search): ask its administrator", err)
	}
	owner := strconv.FormatUint(uint64(st.Uid), 10)
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	group := strconv.FormatUint(uint64(st.Gid), 10)
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	what := fmt.Sprintf("socket exists but you may not connect (mode %04o %s:%s", st.Mode&0o7777, owner, group)
	if st.Mode&0o020 != 0 {
		me := "$USER"
		if u, err := user.Current(); err == nil {
			me = u.Username
		}
		return fmt.Sprintf("%s; join group %s: sudo usermod -aG %s %s, then log in again)", what, group, group, me)
	}
	return fmt.Sprintf("%s; %v: only %s may connect; run as %s, or widen the socket's mode: watchqd --socket-mode)", what, errno, owner, owner)
}

// dialError is the error of a watch or stat whose dial failed.
func dialError(socket string, err error) error {
	return fmt.Errorf("watchqd at %s: %s", socket, dialWhy(socket, err))
}
