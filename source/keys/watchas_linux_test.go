//go:build linux

package keys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
)

// TestViewAs: the View check in another's context decides on the key's
// user, group (primary or supplementary) and other View bits as the
// kernel's key_task_permission does, refuses a key viewable only by its
// possessor (saying why), keeps the kernel's errno for a revoked key, and
// leaves this process's credentials alone.
func TestViewAs(t *testing.T) {
	testenv.RequireRoot(t)
	const owner, other, grp = 64101, 64102, 64103
	uniq := time.Now().UnixNano()
	key := func(perm uint32) int32 {
		t.Helper()
		k := addKey(t, "user", fmt.Sprintf("wq-viewas-%x-%d", perm, uniq), []byte("v"), unix.KEY_SPEC_USER_KEYRING)
		t.Cleanup(func() { unix.KeyctlInt(unix.KEYCTL_UNLINK, int(k), unix.KEY_SPEC_USER_KEYRING, 0, 0) })
		keyctl(t, "chown", unix.KEYCTL_CHOWN, int(k), owner, grp, 0)
		must(t, "setperm", unix.KeyctlSetperm(int(k), perm))
		return k
	}
	userView := key(0x3f010000)
	groupView := key(0x3f000100)
	otherView := key(0x3f000001)
	possOnly := key(0x3f000000)
	revoked := key(0x3f3f3f3f)
	keyctl(t, "revoke", unix.KEYCTL_REVOKE, int(revoked), 0, 0, 0)

	cred := func(uid, gid uint32, groups ...uint32) *watchq.Cred {
		return &watchq.Cred{UID: uid, GID: gid, Groups: groups}
	}
	for _, c := range []struct {
		name  string
		key   int32
		who   *watchq.Cred
		errno unix.Errno // 0: viewable
	}{
		{"owner, user View", userView, cred(owner, owner), 0},
		{"another uid, user View", userView, cred(other, other), unix.EACCES},
		{"primary group", groupView, cred(other, grp), 0},
		{"supplementary group", groupView, cred(other, other, 5, grp), 0},
		{"no group", groupView, cred(other, other, 5), unix.EACCES},
		{"owner, group View only", groupView, cred(owner, owner), unix.EACCES},
		{"other View", otherView, cred(other, other), 0},
		{"possessor only", possOnly, cred(owner, grp), unix.EACCES},
		{"revoked", revoked, cred(owner, grp), unix.EKEYREVOKED},
	} {
		d, err := ViewAs(c.key, c.who)
		switch {
		case c.errno == 0 && err != nil:
			t.Errorf("%s: %v, want viewable", c.name, err)
		case c.errno == 0 && (d.UID != owner || d.GID != grp):
			t.Errorf("%s: described uid %d gid %d", c.name, d.UID, d.GID)
		case c.errno != 0 && !errors.Is(err, c.errno):
			t.Errorf("%s: %v, want %v", c.name, err, c.errno)
		case c.errno == unix.EACCES && !strings.Contains(err.Error(), "possess"):
			t.Errorf("%s: %v, want the reason (possession)", c.name, err)
		}
	}
	if os.Getuid() != 0 || os.Getgid() != 0 {
		t.Fatalf("ViewAs changed the process: uid %d gid %d", os.Getuid(), os.Getgid())
	}
}

// TestWatchAs: a watch made for another uid gets the key's records; its
// arguments are checked (a special id, a nil watcher, a backend other
// than traced); a key it may not view is refused and gets no list.
func TestWatchAs(t *testing.T) {
	testenv.RequireRoot(t)
	src := openTraced(t)
	const owner = 64111
	ring := newKeyring(t, fmt.Sprintf("wq-watchas-%d", time.Now().UnixNano()))
	keyctl(t, "chown", unix.KEYCTL_CHOWN, int(ring), owner, owner, 0)
	w := &watchq.Cred{UID: owner, GID: owner}
	q := watchq.NewQueue()
	q.SetSize(64)
	defer q.Close()
	if err := src.WatchAs(q, SpecSession, 1, w); !errors.Is(err, unix.EINVAL) {
		t.Errorf("special id: %v, want EINVAL", err)
	}
	if err := src.WatchAs(q, ring, 1, nil); err == nil {
		t.Error("nil watcher accepted")
	}
	if err := src.WatchAs(q, ring, 1, &watchq.Cred{UID: owner + 1, GID: owner + 1}); !errors.Is(err, unix.EACCES) {
		t.Errorf("another uid: %v, want EACCES", err)
	}
	if n := src.Watched(); n != 0 {
		t.Fatalf("%d keys watched after refusals", n)
	}
	must(t, "watch as owner", src.WatchAs(q, ring, 4, w))
	k := addKey(t, "user", "wq-watchas-k", []byte("v"), ring)
	must(t, "sync", src.Sync(context.Background()))
	got := newScenario(t, src, q).drain()
	if len(got) != 1 || got[0] != (ev{"linked", ring, uint32(k), 4}) {
		t.Errorf("got %v, want the LINKED of the new key", got)
	}
	must(t, "unwatch", src.UnwatchAs(q, ring, w))
	poll, err := Open(context.Background(), Config{Engine: watchq.NewEngine(watchq.Config{}), Backend: Poll, Interval: time.Hour})
	must(t, "open poll", err)
	defer poll.Close()
	if err := poll.WatchAs(q, ring, 1, w); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("poll backend: %v, want EOPNOTSUPP", err)
	}
}
