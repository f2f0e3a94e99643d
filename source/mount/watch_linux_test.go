//go:build linux

package mount

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// TestWatchErrors: watch_mount's argument checks, the engine's EBUSY and
// EBADSLT, and the policy hook refusing a watcher the directory's search
// bits do not admit.
func TestWatchErrors(t *testing.T) {
	n := newPrivateNS(t)
	n.mkdir("w")
	n.mkdir("private")
	if err := n.do(func() error {
		if err := os.WriteFile(n.p("file"), nil, 0o644); err != nil {
			return err
		}
		return os.Chmod(n.p("private"), 0o700)
	}); err != nil {
		t.Fatal(err)
	}
	src, _ := n.open(Auto)
	q := newQueue(t, 32)
	if err := src.WatchMount(q, n.p("file"), 1, nil); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("watch a file: %v, want ENOTDIR", err)
	}
	if err := src.WatchMount(q, n.p("nonesuch"), 1, nil); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("watch a missing path: %v, want ENOENT", err)
	}
	if err := src.WatchMount(q, n.p("w"), 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := src.WatchMount(q, n.p("w"), 2, nil); !errors.Is(err, watchq.ErrWatchExists) || !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second watch: %v, want EBUSY", err)
	}
	if err := src.UnwatchMount(q, n.p("w")); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, src, n.root, q); len(got) != 1 || !strings.HasPrefix(got[0], "removal . tag1") {
		t.Errorf("unwatch: %q, want one removal record", got)
	}
	if err := src.UnwatchMount(q, n.p("w")); !errors.Is(err, syscall.EBADSLT) {
		t.Errorf("unwatch again: %v, want EBADSLT", err)
	}
	bob := &watchq.Cred{UID: 1234, GID: 1234}
	if err := src.WatchMount(q, n.p("private"), 1, bob); !errors.Is(err, syscall.EACCES) {
		t.Errorf("uid 1234 on a 0700 root directory: %v, want EACCES", err)
	}
	if err := src.WatchMount(q, n.p("w"), 1, bob); err != nil {
		t.Errorf("uid 1234 on a 0755 directory: %v", err)
	}
	if err := src.WatchSuperblock(q, n.p("private"), 1, bob); !errors.Is(err, syscall.EACCES) {
		t.Errorf("superblock watch by uid 1234 through a 0700 directory: %v, want EACCES", err)
	}
}

// TestOnlyOwnNamespace: a source on the host's namespace hears nothing of
// mounts made in a private one, and a source on the private one nothing of
// the host's.
func TestOnlyOwnNamespace(t *testing.T) {
	n := newPrivateNS(t)
	n.mkdir("x")
	eng := watchq.NewEngine(watchq.Config{})
	host, err := Open(syncCtx(t), Config{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	priv, _ := n.open(Auto)
	hq, pq := newQueue(t, 256), newQueue(t, 256)
	if err := host.WatchMount(hq, "/", 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := priv.WatchMount(pq, "/", 1, nil); err != nil {
		t.Fatal(err)
	}
	// A mount in the host namespace (the test's own thread is there).
	hostDir := t.TempDir()
	if err := unix.Mount("tmpfs", hostDir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(hostDir, 0)
	n.mount("tmpfs", n.p("x"), "tmpfs", 0, "")
	for _, s := range []*Source{host, priv} {
		if err := s.Sync(syncCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	privMount, hostMount := n.p("x"), hostDir
	for _, r := range drain(t, host, "/", hq) { // other processes may mount on the host too
		if strings.Contains(r, strings.TrimPrefix(privMount, "/")) {
			t.Errorf("host source reported the private mount: %s", r)
		}
	}
	got := drain(t, priv, n.root, pq)
	if len(got) != 1 || got[0] != "new_mount x on . [sub] tag1" {
		t.Errorf("private source: %q, want only its own new mount", got)
	}
	for _, r := range got {
		if strings.Contains(r, hostMount) {
			t.Errorf("private source reported the host mount: %s", r)
		}
	}
	_ = record.TypeMount
}
