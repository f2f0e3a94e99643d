package daemon

import (
	"strconv"
	"syscall"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
)

// MountSource is what the daemon needs of the mount source: watch_mount(2)
// and watch_sb(2) in a client's own mount namespace. internal/watchqd's
// implementation keeps one *mount.Source per namespace in use. Paths are
// absolute and resolved in ns; watcher is the client, on whom the engine's
// policy rules (watchq.KindMount, watchq.KindSuperblock).
type MountSource interface {
	// WatchMount adds q's watch on the mounts at and below directory
	// path in ns.
	WatchMount(ns Namespace, q *watchq.Queue, path string, tag record.Tag, watcher *watchq.Cred) error
	// UnwatchMount removes q's watch on directory path in ns.
	UnwatchMount(ns Namespace, q *watchq.Queue, path string) error
	// WatchSuperblock adds q's watch on the filesystem path is on in ns.
	// A non-nil noFSErrors (with err nil) says the watch is in place but
	// reports read-only transitions only, and why (the mount source's
	// mount.ErrNoFSErrors).
	WatchSuperblock(ns Namespace, q *watchq.Queue, path string, tag record.Tag, watcher *watchq.Cred) (noFSErrors, err error)
	// UnwatchSuperblock removes q's watch on the filesystem path is on.
	UnwatchSuperblock(ns Namespace, q *watchq.Queue, path string) error
}

// Namespace is a client's mount namespace, as the daemon found it for one
// request (see conn.namespace): an open nsfs file and its identity.
type Namespace struct {
	// FD is an open file of the namespace, valid during the MountSource
	// call only (Path names it for mount.Config.Namespace).
	FD int
	// Dev and Ino identify the namespace (fstat of FD): equal for two
	// clients in the same namespace.
	Dev, Ino uint64
	// UID is the client's uid, whom a source opened for the namespace is
	// charged to.
	UID uint32
}

// Path names the namespace's file for as long as FD is open:
// /proc/self/fd/FD, the path mount.Config.Namespace takes.
func (ns Namespace) Path() string { return "/proc/self/fd/" + strconv.Itoa(ns.FD) }

// mountWatch answers watch-mount (sb false) and watch-sb (sb true): tag
// 0..255 adds the watch, charged to the client's uid first (c.watch), -1
// removes it and gives the charge back. The path was bounded by the
// protocol decoder (absolute, at most PATH_MAX-1 bytes); it is looked up
// in the client's own mount namespace, never the daemon's.
func (c *conn) mountWatch(sb bool, queue uint32, tag32 int32, path string) ([]byte, int, error) {
	q, tag, remove, err := c.watchArgs(queue, tag32)
	if err != nil {
		return nil, -1, err
	}
	src := c.s.cfg.Mounts
	if src == nil {
		return nil, -1, &watchq.Errno{Errno: syscall.ENODEV, Reason: "watchqd runs without its mount source"}
	}
	ns, err := c.namespace()
	if err != nil {
		return nil, -1, err
	}
	defer closeNamespace(ns)
	if remove {
		if sb {
			err = src.UnwatchSuperblock(ns, q.q, path)
		} else {
			err = src.UnwatchMount(ns, q.q, path)
		}
		if err != nil {
			return nil, -1, err
		}
		q.unhold(0, 1)
		b, _ := protocol.MountWatchReply{}.AppendBinary(nil)
		return b, -1, nil
	}
	var reply protocol.MountWatchReply
	err = c.watch(q, func() error {
		if !sb {
			return src.WatchMount(ns, q.q, path, tag, c.cred)
		}
		nofs, err := src.WatchSuperblock(ns, q.q, path, tag, c.cred)
		if err == nil && nofs != nil {
			// In place, read-only transitions only: a success
			// that says why errors will not come.
			reply.Flags |= protocol.MountNoFSErrors
			reply.Reason = nofs.Error()
		}
		return err
	})
	if err != nil {
		return nil, -1, err
	}
	b, _ := reply.AppendBinary(nil)
	return b, -1, nil
}
