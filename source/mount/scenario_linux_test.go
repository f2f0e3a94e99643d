//go:build linux

package mount

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Tags of the scenario's watches.
const (
	tagSubtree = 1 // q1: the subtree at w
	tagRoot    = 2 // q2: the namespace root "/"
	tagSB      = 3 // q3: the superblock of w
)

// step is one action of the scenario and what each queue must receive
// for it, in order.
type step struct {
	name string
	do   func(n *privateNS)
	// worker runs do on the source's worker thread (which is in the
	// namespace), so the source reads nothing until the step is over.
	worker  bool
	subtree []string // q1, watching w
	root    []string // q2, watching /
	sb      []string // q3, watching w's superblock
	// differs, when set, is what the mountinfo backend gets instead: the
	// documented differences (docs/mounts.md).
	differs *step
}

// scenario is the script both backends run. "." is the test's tmpfs; w is
// a tmpfs mounted on it before the watches are set; s is a sibling
// directory.
func scenario() []step {
	ms := func(n *privateNS, src, rel string, flags uintptr) {
		n.mkdir(rel)
		n.mount(src, n.p(rel), "tmpfs", flags, "")
	}
	return []step{
		{name: "tmpfs on w/a", do: func(n *privateNS) { ms(n, "tmpfs", "w/a", 0) },
			subtree: []string{"new_mount w/a on w tag1"},
			root:    []string{"new_mount w/a on w [sub] tag2"}},
		{name: "nested tmpfs on w/a/b", do: func(n *privateNS) { ms(n, "tmpfs", "w/a/b", 0) },
			subtree: []string{"new_mount w/a/b on w/a [sub] tag1"},
			root:    []string{"new_mount w/a/b on w/a [sub] tag2"}},
		{name: "sibling tmpfs on s", do: func(n *privateNS) { ms(n, "tmpfs", "s", 0) },
			root: []string{"new_mount s on . [sub] tag2"}},
		{name: "bind s on w/c", do: func(n *privateNS) {
			n.mkdir("w/c")
			n.mount(n.p("s"), n.p("w/c"), "", unix.MS_BIND, "")
		},
			subtree: []string{"new_mount w/c on w tag1"},
			root:    []string{"new_mount w/c on w [sub] tag2"}},
		{name: "rbind w/a (and w/a/b) on w/r", do: func(n *privateNS) {
			n.mkdir("w/r")
			n.mount(n.p("w/a"), n.p("w/r"), "", unix.MS_BIND|unix.MS_REC, "")
		},
			subtree: []string{"new_mount w/r on w tag1", "new_mount w/r/b on w/r [sub] tag1"},
			root:    []string{"new_mount w/r on w [sub] tag2", "new_mount w/r/b on w/r [sub] tag2"}},
		{name: "move w/r (and w/r/b) to w/q", do: func(n *privateNS) {
			n.mkdir("w/q")
			n.mount(n.p("w/r"), n.p("w/q"), "", unix.MS_MOVE, "")
		},
			subtree: []string{"move_from w/q on w tag1", "move_to w/q on w tag1"},
			root:    []string{"move_from w/q on w [sub] tag2", "move_to w/q on w [sub] tag2"}},
		{name: "lazy umount of w/q and w/q/b", do: func(n *privateNS) { n.umount(n.p("w/q"), unix.MNT_DETACH) },
			subtree: []string{"unmount w/q on w tag1", "unmount w/q/b on w/q [sub] tag1"},
			root:    []string{"unmount w/q on w [sub] tag2", "unmount w/q/b on w/q [sub] tag2"}},
		{name: "move w/c to w/a/d", do: func(n *privateNS) {
			n.mkdir("w/a/d")
			n.mount(n.p("w/c"), n.p("w/a/d"), "", unix.MS_MOVE, "")
		},
			subtree: []string{"move_from w/a/d on w tag1", "move_to w/a/d on w/a [sub] tag1"},
			root:    []string{"move_from w/a/d on w [sub] tag2", "move_to w/a/d on w/a [sub] tag2"}},
		{name: "move w/a/d out to s/e", do: func(n *privateNS) {
			n.mkdir("s/e")
			n.mount(n.p("w/a/d"), n.p("s/e"), "", unix.MS_MOVE, "")
		},
			subtree: []string{"move_from s/e on w/a [sub] tag1"},
			root:    []string{"move_from s/e on w/a [sub] tag2", "move_to s/e on s [sub] tag2"}},
		{name: "remount w/a read-only (bind)", do: func(n *privateNS) {
			n.mount("", n.p("w/a"), "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
		},
			subtree: []string{"readonly on w/a [sub ro] tag1"},
			root:    []string{"readonly on w/a [sub ro] tag2"}},
		{name: "remount w/a nosuid (bind)", do: func(n *privateNS) {
			n.mount("", n.p("w/a"), "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID, "")
		},
			subtree: []string{"setattr on w/a [sub ro] tag1"},
			root:    []string{"setattr on w/a [sub ro] tag2"}},
		{name: "remount w's filesystem read-only", do: func(n *privateNS) {
			n.mount("", n.p("w"), "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
		},
			subtree: []string{"readonly on w [ro] tag1"},
			root:    []string{"readonly on w [sub ro] tag2"},
			sb:      []string{"sb readonly [ro] tag3"}},
		{name: "umount w/a/b", do: func(n *privateNS) { n.umount(n.p("w/a/b"), 0) },
			subtree: []string{"unmount w/a/b on w/a [sub] tag1"},
			root:    []string{"unmount w/a/b on w/a [sub] tag2"}},
		{name: "umount s/e, then s, between two reads", worker: true, do: func(n *privateNS) {
			for _, p := range []string{"s/e", "s"} {
				if err := unix.Unmount(n.p(p), 0); err != nil {
					n.t.Fatal(err)
				}
			}
		},
			root: []string{"unmount s/e on s [sub] tag2", "unmount s on . [sub] tag2"},
			// The mountinfo backend sees both gone at once and posts them
			// parents first, the order of a tree's unmount.
			differs: &step{root: []string{"unmount s on . [sub] tag2", "unmount s/e on s [sub] tag2"}}},
		{name: "mount and umount between two reads", worker: true, do: func(n *privateNS) {
			n.mkdir("s")
			if err := unix.Mount("tmpfs", n.p("s"), "tmpfs", 0, ""); err != nil {
				n.t.Fatal(err)
			}
			if err := unix.Unmount(n.p("s"), 0); err != nil {
				n.t.Fatal(err)
			}
		},
			// fanotify reads the attach after the mount is gone: statmount
			// cannot say where it was, so only "/" hears of it, with
			// triggered_on 0. The mountinfo backend never sees a mount that
			// came and went between two reads.
			root:    []string{"new_mount (unknown) on ? [sub] tag2", "unmount (unknown) on ? [sub] tag2"},
			differs: &step{}},
		{name: "umount w/a", do: func(n *privateNS) { n.umount(n.p("w/a"), 0) },
			subtree: []string{"unmount w/a on w tag1"},
			root:    []string{"unmount w/a on w [sub] tag2"}},
		{name: "umount the watched w", do: func(n *privateNS) { n.umount(n.p("w"), 0) },
			subtree: []string{"removal w tag1"},
			root:    []string{"unmount w on . [sub] tag2"},
			sb:      []string{"removal-sb tag3"}},
	}
}

// runScenario runs the script on one backend and returns every step's
// records, queue by queue, as "step: record" lines.
func runScenario(t *testing.T, b Backend) []string {
	n := newPrivateNS(t)
	n.mkdir("w")
	n.mount("tmpfs", n.p("w"), "tmpfs", 0, "")
	src, _ := n.open(b)
	if src.Backend() != b {
		t.Fatalf("backend %v, want %v", src.Backend(), b)
	}
	q1, q2, q3 := newQueue(t, 256), newQueue(t, 256), newQueue(t, 256)
	if err := src.WatchMount(q1, n.p("w"), tagSubtree, nil); err != nil {
		t.Fatal(err)
	}
	if err := src.WatchMount(q2, "/", tagRoot, nil); err != nil {
		t.Fatal(err)
	}
	if err := src.WatchSuperblock(q3, n.p("w"), tagSB, nil); err != nil && !isNoFSErrors(err) {
		t.Fatal(err)
	}
	var log []string
	for _, st := range scenario() {
		if st.worker {
			if err := src.do(syncCtx(t), func(*worker) error { st.do(n); return nil }); err != nil {
				t.Fatal(err)
			}
		} else {
			st.do(n)
		}
		if err := src.Sync(syncCtx(t)); err != nil {
			t.Fatal(err)
		}
		want := st
		if st.differs != nil && b == Mountinfo {
			want = *st.differs
		}
		got1 := drain(t, src, n.root, q1)
		got2 := drain(t, src, n.root, q2)
		got3 := sbNames(drain(t, src, n.root, q3))
		for _, c := range []struct {
			q         string
			got, want []string
		}{{"subtree", got1, want.subtree}, {"root", got2, want.root}, {"sb", got3, want.sb}} {
			if !slices.Equal(c.got, c.want) {
				t.Errorf("%v: %s: %s queue got\n\t%s\nwant\n\t%s", b, st.name, c.q, strings.Join(c.got, "\n\t"), strings.Join(c.want, "\n\t"))
			}
			for _, g := range c.got {
				log = append(log, st.name+": "+c.q+": "+g)
			}
		}
	}
	return log
}

// sbNames renders superblock removals without their id.
func sbNames(rs []string) []string {
	for i, r := range rs {
		if strings.HasPrefix(r, "removal (unknown)") {
			rs[i] = "removal-sb" + r[strings.LastIndex(r, " "):]
		}
	}
	return rs
}

func isNoFSErrors(err error) bool {
	return err != nil && strings.Contains(err.Error(), ErrNoFSErrors.Error())
}

// TestScenario runs the script through the fanotify backend and through
// the mountinfo backend forced on, each in a private mount namespace: each
// gets the right records in order (a subtree watch sees the nested mounts
// and not the sibling's, unmounting the watched mount ends its watch with
// a removal record), and the two logs differ in exactly the steps
// docs/mounts.md documents.
func TestScenario(t *testing.T) {
	logs := map[Backend][]string{}
	for _, b := range []Backend{Fanotify, Mountinfo} {
		t.Run(b.String(), func(t *testing.T) { logs[b] = runScenario(t, b) })
	}
	if t.Failed() || len(logs) != 2 {
		return
	}
	documented := map[string]bool{}
	for _, st := range scenario() {
		if st.differs != nil {
			documented[st.name] = true
		}
	}
	perStep := func(log []string) map[string][]string {
		m := map[string][]string{}
		for _, l := range log {
			name, _, _ := strings.Cut(l, ": ")
			m[name] = append(m[name], l)
		}
		return m
	}
	fa, mi := perStep(logs[Fanotify]), perStep(logs[Mountinfo])
	for _, st := range scenario() {
		same := slices.Equal(fa[st.name], mi[st.name])
		switch {
		case !same && !documented[st.name]:
			t.Errorf("step %q: backends differ, undocumented:\nfanotify:\n\t%s\nmountinfo:\n\t%s", st.name, strings.Join(fa[st.name], "\n\t"), strings.Join(mi[st.name], "\n\t"))
		case same && documented[st.name]:
			t.Errorf("step %q: documented as differing, but both backends posted\n\t%s", st.name, strings.Join(fa[st.name], "\n\t"))
		}
	}
}
