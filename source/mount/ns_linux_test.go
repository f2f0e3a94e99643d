//go:build linux

package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// privateNS is a private mount namespace held by one locked OS thread, on
// which the test runs its mount(2) calls. The thread (and with it the
// namespace, once the sources watching it are closed) goes away when the
// test ends.
type privateNS struct {
	t     testing.TB
	calls chan func()
	path  string // /proc/PID/task/TID/ns/mnt
	root  string // a private tmpfs the test works in
}

func newPrivateNS(t testing.TB) *privateNS {
	t.Helper()
	testenv.RequireRoot(t)
	n := &privateNS{t: t, calls: make(chan func())}
	ready := make(chan error, 1)
	// goLocked: the thread is never unlocked, so the runtime destroys it
	// when the goroutine returns and nothing else ever runs in the
	// namespace; and it is not the main thread, which would outlive the
	// test in the namespace.
	goLocked(func() {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNS): %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			ready <- fmt.Errorf("make / rprivate: %w", err)
			return
		}
		n.path = fmt.Sprintf("/proc/%d/task/%d/ns/mnt", os.Getpid(), unix.Gettid())
		ready <- nil
		for f := range n.calls {
			f()
		}
	})
	if err := <-ready; err != nil {
		testenv.Skip(t, "private mount namespace: %v", err)
	}
	dir := t.TempDir()
	t.Cleanup(func() { close(n.calls) })
	n.root = dir
	n.mount("tmpfs", dir, "tmpfs", 0, "mode=0755")
	return n
}

// do runs f on the namespace's thread.
func (n *privateNS) do(f func() error) error {
	errc := make(chan error, 1)
	n.calls <- func() { errc <- f() }
	return <-errc
}

// p is a path under the test's tmpfs.
func (n *privateNS) p(rel string) string { return filepath.Join(n.root, rel) }

func (n *privateNS) mkdir(rel string) {
	n.t.Helper()
	if err := n.do(func() error { return os.MkdirAll(n.p(rel), 0o755) }); err != nil {
		n.t.Fatal(err)
	}
}

func (n *privateNS) mount(src, target, fstype string, flags uintptr, data string) {
	n.t.Helper()
	if err := n.do(func() error { return unix.Mount(src, target, fstype, flags, data) }); err != nil {
		n.t.Fatalf("mount %s on %s (%s, %#x, %q): %v", src, target, fstype, flags, data, err)
	}
}

func (n *privateNS) umount(target string, flags int) {
	n.t.Helper()
	if err := n.do(func() error { return unix.Unmount(target, flags) }); err != nil {
		n.t.Fatalf("umount %s: %v", target, err)
	}
}

// open starts a source on the namespace.
func (n *privateNS) open(b Backend) (*Source, *watchq.Engine) {
	n.t.Helper()
	eng := watchq.NewEngine(watchq.Config{})
	src, err := Open(context.Background(), Config{Engine: eng, Backend: b, Namespace: n.path})
	if errors.Is(err, ErrNotSupported) {
		testenv.Skip(n.t, "%v backend: %v", b, err)
	}
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { src.Close() })
	return src, eng
}

// newQueue returns a sized engine queue, closed when the test ends.
func newQueue(t testing.TB, notes int) *watchq.Queue {
	t.Helper()
	q := watchq.NewQueue()
	if _, err := q.SetSize(notes); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// render describes a record with mount points instead of ids, relative to
// the test's tmpfs (which is "."), so runs and backends compare:
// "new_mount w/a on w", "readonly w/a on w/a [sub ro]", "removal w tag1".
func render(src *Source, root string, r record.Record) string {
	name := func(id uint64) string {
		if id == 0 {
			return "?"
		}
		p, ok := src.MountPoint(id)
		if !ok {
			return "(unknown)"
		}
		if rel, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
		return p
	}
	switch {
	case r.IsRemoval():
		m, _ := r.Removal()
		return fmt.Sprintf("removal %s tag%d", name(uint64(m.ID)), m.Tag)
	case r.IsLoss():
		return "loss"
	case r.Type() == record.TypeMount:
		m, err := r.Mount()
		if err != nil {
			return "bad mount record: " + err.Error()
		}
		s := record.MountSubtypeName(m.Subtype)
		if m.Aux != 0 {
			s += " " + name(m.Aux)
		}
		s += " on " + name(m.TriggeredOn)
		var fl []string
		if m.Flags&record.MountFlagInSubtree != 0 {
			fl = append(fl, "sub")
		}
		if m.Flags&record.MountFlagNowRO != 0 {
			fl = append(fl, "ro")
		}
		if len(fl) > 0 {
			s += " [" + strings.Join(fl, " ") + "]"
		}
		return fmt.Sprintf("%s tag%d", s, m.Tag)
	case r.Type() == record.TypeSuperblock:
		sb, _ := r.Superblock()
		s := fmt.Sprintf("sb %s", record.SuperblockSubtypeName(sb.Subtype))
		if sb.Flags&record.SuperblockFlagNowRO != 0 {
			s += " [ro]"
		}
		if sb.Subtype == record.SuperblockError {
			s += fmt.Sprintf(" errno=%d count=%d", sb.ErrorNumber, sb.ErrorCookie)
		}
		return fmt.Sprintf("%s tag%d", s, sb.Tag)
	}
	return r.String()
}

// drain returns every record queued in q, rendered.
func drain(t testing.TB, src *Source, root string, q *watchq.Queue) []string {
	t.Helper()
	var out []string
	buf := make([]byte, 4096)
	for {
		n, err := q.TryRead(buf)
		if errors.Is(err, watchq.ErrWouldBlock) {
			return out
		}
		if err != nil {
			t.Fatalf("TryRead: %v", err)
		}
		for r, err := range record.Records(buf[:n]) {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, render(src, root, r))
		}
	}
}

// syncCtx is the bound on one Sync: it fails a wedged test, it is not a
// synchronisation.
func syncCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
