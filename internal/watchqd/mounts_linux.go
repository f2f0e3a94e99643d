package watchqd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/mount"
)

// Bounds on the mount sources the daemon runs. Each is an OS thread in its
// namespace, a fanotify group, the namespace's mountinfo and an eventfd
// (four descriptors, within daemon.New's reserve for the first few).
const (
	// maxMountNamespaces is how many mount namespaces watchqd watches
	// at once, all users together.
	maxMountNamespaces = 32
	// maxMountNamespacesPerUID is how many of them one uid may have
	// opened (a source is charged to the uid whose request opened it),
	// so that no user takes them all. Sources left without watches are
	// closed when a new one is needed.
	maxMountNamespacesPerUID = 4
)

// nsKey identifies a mount namespace: its nsfs inode.
type nsKey struct{ dev, ino uint64 }

// nsSource is the mount source of one namespace.
type nsSource struct {
	src *mount.Source
	uid uint32 // the uid it is charged to
}

// mountPool is the daemon's daemon.MountSource: one mount.Source per
// client mount namespace in use, opened on the first watch from it (the
// source joins the namespace the client's pidfd gave, so paths resolve
// and mounts are seen there and nowhere else), closed when a new one is
// needed and it has no watch left, or when the daemon stops.
type mountPool struct {
	ctx context.Context // the daemon's: ending it closes every source
	eng *watchq.Engine
	log *slog.Logger

	// mu guards srcs and is held across each watch call, so that a
	// source is never closed as idle while a watch is being added.
	mu   sync.Mutex
	srcs map[nsKey]*nsSource
}

// newMountSource returns the mount source watchqd serves; sources open
// lazily, so it cannot fail.
func newMountSource(ctx context.Context, eng *watchq.Engine, log *slog.Logger) daemon.MountSource {
	return &mountPool{ctx: ctx, eng: eng, log: log, srcs: make(map[nsKey]*nsSource)}
}

func errPool(errno syscall.Errno, format string, args ...any) error {
	return &watchq.Errno{Errno: errno, Reason: fmt.Sprintf(format, args...)}
}

// getLocked returns ns's source, opening it if open; nil with open false
// when there is none.
//
// Preconditions: p.mu is held.
func (p *mountPool) getLocked(ns daemon.Namespace, open bool) (*mount.Source, error) {
	k := nsKey{ns.Dev, ns.Ino}
	if e := p.srcs[k]; e != nil {
		return e.src, nil
	}
	if !open {
		return nil, nil
	}
	if p.countLocked(ns.UID) >= maxMountNamespacesPerUID || len(p.srcs) >= maxMountNamespaces {
		p.reapLocked()
	}
	if n := p.countLocked(ns.UID); n >= maxMountNamespacesPerUID {
		return nil, errPool(syscall.EAGAIN, "uid %d has watches in %d mount namespaces, the limit", ns.UID, n)
	}
	if len(p.srcs) >= maxMountNamespaces {
		return nil, errPool(syscall.ENFILE, "watchqd watches %d mount namespaces, its limit", len(p.srcs))
	}
	src, err := mount.Open(p.ctx, mount.Config{Engine: p.eng, Namespace: ns.Path()})
	if err != nil {
		return nil, err
	}
	p.srcs[k] = &nsSource{src: src, uid: ns.UID}
	c := src.Capabilities()
	p.log.Info("mount source", "namespace", ns.Ino, "uid", ns.UID, "backend", c.Backend.String(),
		"unique_ids", errString(c.UniqueIDs), "fs_errors", errString(c.FSErrors))
	return src, nil
}

// countLocked returns how many sources are charged to uid.
//
// Preconditions: p.mu is held.
func (p *mountPool) countLocked(uid uint32) int {
	n := 0
	for _, e := range p.srcs {
		if e.uid == uid {
			n++
		}
	}
	return n
}

// reapLocked closes every source without watches (their queues closed,
// their mounts unmounted, their watches removed).
//
// Preconditions: p.mu is held.
func (p *mountPool) reapLocked() {
	for k, e := range p.srcs {
		if n, err := e.src.Watches(); err != nil || n == 0 {
			e.src.Close()
			delete(p.srcs, k)
			p.log.Debug("mount source closed: no watches left", "namespace", k.ino, "uid", e.uid)
		}
	}
}

// WatchMount implements daemon.MountSource.
func (p *mountPool) WatchMount(ns daemon.Namespace, q *watchq.Queue, path string, tag record.Tag, watcher *watchq.Cred) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	src, err := p.getLocked(ns, true)
	if err != nil {
		return err
	}
	return src.WatchMount(q, path, tag, watcher)
}

// WatchSuperblock implements daemon.MountSource.
func (p *mountPool) WatchSuperblock(ns daemon.Namespace, q *watchq.Queue, path string, tag record.Tag, watcher *watchq.Cred) (noFSErrors, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	src, err := p.getLocked(ns, true)
	if err != nil {
		return nil, err
	}
	err = src.WatchSuperblock(q, path, tag, watcher)
	if errors.Is(err, mount.ErrNoFSErrors) {
		return err, nil
	}
	return nil, err
}

// UnwatchMount implements daemon.MountSource.
func (p *mountPool) UnwatchMount(ns daemon.Namespace, q *watchq.Queue, path string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	src, err := p.getLocked(ns, false)
	if src == nil || err != nil {
		return watchq.ErrNoWatch
	}
	return src.UnwatchMount(q, path)
}

// UnwatchSuperblock implements daemon.MountSource.
func (p *mountPool) UnwatchSuperblock(ns daemon.Namespace, q *watchq.Queue, path string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	src, err := p.getLocked(ns, false)
	if src == nil || err != nil {
		return watchq.ErrNoWatch
	}
	return src.UnwatchSuperblock(q, path)
}
