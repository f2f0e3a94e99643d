package mount

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

func TestParseMountinfo(t *testing.T) {
	in := "" +
		"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n" +
		"68 22 0:40 / /mnt/my\\040disk ro,noatime,nosymfollow - tmpfs tmpfs ro,size=1024k\n" +
		"69 68 0:40 /sub /mnt/my\\040disk/b rw - tmpfs tmpfs rw\n"
	got, err := parseMountinfo([]byte(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []mountInfo{
		{ID: 22, Parent: 1, Major: 254, MountPoint: "/", FSType: "ext4"},
		{ID: 23, Parent: 22, Minor: 21, MountPoint: "/proc", Attr: AttrNosuid | AttrNodev | AttrNoexec, FSType: "proc"},
		{ID: 68, Parent: 22, Minor: 40, MountPoint: "/mnt/my disk", Attr: AttrRdonly | AttrNoatime | AttrNosymfollow, FSType: "tmpfs", SBReadonly: true},
		{ID: 69, Parent: 68, Minor: 40, MountPoint: "/mnt/my disk/b", Attr: AttrStrictatime, FSType: "tmpfs"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
	for _, bad := range []string{
		"22 1 254:0 / / rw",                           // too short
		"x 1 254:0 / / rw - ext4 /dev/vda rw",         // id
		"22 1 254 / / rw - ext4 /dev/vda rw",          // dev
		"22 1 254:0 / rel rw - ext4 /dev/vda rw",      // relative mount point
		"22 1 254:0 / /a\\04 rw - ext4 /dev/vda rw",   // short escape
		"22 1 254:0 / / rw shared:1 ext4 /dev/vda rw", // no separator
	} {
		if _, err := parseMountinfo([]byte(bad+"\n"), nil); !errors.Is(err, errMountinfo) {
			t.Errorf("%q: %v, want errMountinfo", bad, err)
		}
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add([]byte("22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"))
	f.Add([]byte("68 22 0:40 / /mnt/my\\040disk ro - tmpfs tmpfs ro\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, err := parseMountinfo(b, nil)
		if err != nil {
			return
		}
		for _, l := range ls {
			if !strings.HasPrefix(l.MountPoint, "/") {
				t.Fatalf("accepted mount point %q", l.MountPoint)
			}
		}
	})
}

func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		p, dir string
		want   bool
	}{{"/a/b", "/", true}, {"/a/b", "/a", true}, {"/a/b", "/a/b", true}, {"/ab", "/a", false}, {"/a", "/a/b", false}} {
		if got := hasPathPrefix(tc.p, tc.dir); got != tc.want {
			t.Errorf("hasPathPrefix(%q, %q) = %v", tc.p, tc.dir, got)
		}
	}
	for _, tc := range []struct{ p, from, to, want string }{
		{"/a/b/c", "/a/b", "/x", "/x/c"}, {"/a/b", "/a/b", "/x/y", "/x/y"},
		{"/a", "/", "/x", "/x/a"}, {"/", "/", "/x", "/x"}, {"/a/b", "/a", "/", "/b"},
	} {
		if got, ok := rebase(tc.p, tc.from, tc.to); !ok || got != tc.want {
			t.Errorf("rebase(%q, %q, %q) = %q, %v; want %q", tc.p, tc.from, tc.to, got, ok, tc.want)
		}
	}
}

// fakeNS drives a topology without a kernel: the propagation rules, tags,
// flags, removal and superblock lifetime.
type fakeNS struct {
	t  *testing.T
	tp *topology
	pi *pathIndex
}

func newFakeNS(t *testing.T) *fakeNS {
	pi := newPathIndex()
	tp := newTopology(watchq.NewEngine(watchq.Config{}), watchq.SystemCred, &counters{}, pi)
	// 1 "/" (its parent outside), 2 "/w", 3 "/s"; w and s share dev 0:40.
	tp.load([]entry{
		{id: 1, parent: 100, mountPoint: "/", dev: record.KernelDev(254, 0)},
		{id: 2, parent: 1, mountPoint: "/w", dev: record.KernelDev(0, 40)},
		{id: 3, parent: 1, mountPoint: "/s", dev: record.KernelDev(0, 40)},
	})
	return &fakeNS{t: t, tp: tp, pi: pi}
}

func (f *fakeNS) watch(path string, mnt uint64, tag record.Tag) *watchq.Queue {
	q := watchq.NewQueue()
	q.SetSize(64)
	f.t.Cleanup(func() { q.Close() })
	k := watchKey{path, mnt}
	wl := f.tp.watches[k]
	if wl == nil {
		wl = f.tp.eng.NewWatchList(watchq.Object{Kind: watchq.KindMount, ID: ObjectID(mnt)})
		f.tp.watches[k] = wl
	}
	if err := wl.Add(q, ObjectID(mnt), tag, watchq.SystemCred); err != nil {
		f.t.Fatal(err)
	}
	return q
}

func (f *fakeNS) got(q *watchq.Queue) []string {
	var out []string
	buf := make([]byte, 4096)
	for {
		n, err := q.TryRead(buf)
		if err != nil {
			return out
		}
		for r := range record.Records(buf[:n]) {
			switch {
			case r.IsRemoval():
				m, _ := r.Removal()
				out = append(out, fmt.Sprintf("removal %d", m.ID))
			case r.Type() == record.TypeMount:
				m, _ := r.Mount()
				out = append(out, fmt.Sprintf("%s %d/%d %#x", record.MountSubtypeName(m.Subtype), m.TriggeredOn, m.Aux, m.Flags>>16))
			case r.Type() == record.TypeSuperblock:
				s, _ := r.Superblock()
				out = append(out, fmt.Sprintf("sb %s %#x %d/%d", record.SuperblockSubtypeName(s.Subtype), s.SBID, s.ErrorNumber, s.ErrorCookie))
			}
		}
	}
}

func (f *fakeNS) expect(q *watchq.Queue, want ...string) {
	f.t.Helper()
	if got := f.got(q); !slices.Equal(got, want) {
		f.t.Errorf("got %q, want %q", got, want)
	}
}

func TestTopologyPropagation(t *testing.T) {
	f := newFakeNS(t)
	root := f.watch("/", 1, 1)
	w := f.watch("/w", 2, 2)
	dir := f.watch("/w/a", 2, 3) // a directory in w, not a mount point
	f.tp.attach(entry{id: 4, parent: 2, mountPoint: "/w/a", dev: record.KernelDev(0, 41)})
	f.tp.attach(entry{id: 5, parent: 4, mountPoint: "/w/a/b", dev: record.KernelDev(0, 42), attr: AttrRdonly})
	f.tp.attach(entry{id: 6, parent: 3, mountPoint: "/s/x", dev: record.KernelDev(0, 43)})
	f.expect(root, "new_mount 2/4 0x1", "new_mount 4/5 0x3", "new_mount 3/6 0x1")
	f.expect(w, "new_mount 2/4 0x0", "new_mount 4/5 0x3")
	// A watch on a plain directory of w sees the mounts below it (the
	// patches' walk, starting at w's root, would have missed new_mount 2/4).
	f.expect(dir, "new_mount 2/4 0x1", "new_mount 4/5 0x3")
	f.tp.setAttr(5, 0)
	f.tp.setAttr(4, AttrNosuid)
	f.expect(w, "readonly 5/0 0x1", "setattr 4/0 0x1")
	f.tp.move(5, 6, "/s/x/b")
	f.expect(w, "move_from 4/5 0x1")
	// Walking up from 4's root passes 4's mount point, the watched
	// directory of w.
	f.expect(dir, "readonly 5/0 0x1", "setattr 4/0 0x1", "move_from 4/5 0x1")
	f.expect(root, "readonly 5/0 0x1", "setattr 4/0 0x1", "move_from 4/5 0x1", "move_to 6/5 0x1")
	if p, _ := f.pi.lookup(5); p != "/s/x/b" {
		t.Errorf("moved mount at %q", p)
	}
	f.tp.detach(4)
	f.expect(w, "unmount 2/4 0x0")
	f.expect(dir, "unmount 2/4 0x1")
	f.tp.detach(2)
	f.expect(w, "removal 2")
	f.expect(dir, "removal 2")
	f.expect(root, "unmount 2/4 0x1", "unmount 1/2 0x0")
	if p, ok := f.pi.lookup(2); !ok || p != "/w" {
		t.Errorf("detached mount's path forgotten: %q %v", p, ok)
	}
	f.tp.attachUnknown(9)
	f.tp.detach(9)
	f.expect(root, "new_mount 0/9 0x1", "unmount 0/9 0x1")
}

func TestTopologySuperblock(t *testing.T) {
	f := newFakeNS(t)
	q := watchq.NewQueue()
	q.SetSize(64)
	defer q.Close()
	dev := record.KernelDev(0, 40)
	sw := &sbWatch{dev: dev, wl: f.tp.eng.NewWatchList(watchq.Object{Kind: watchq.KindSuperblock, ID: record.ObjectID(dev)})}
	sw.wl.Add(q, record.ObjectID(dev), 3, watchq.SystemCred)
	f.tp.sbs[dev] = sw
	gone := 0
	f.tp.onSBGone = func(*sbWatch) { gone++ }
	f.tp.setSBReadonly(dev, true)
	f.tp.setSBReadonly(dev, true) // no change
	f.tp.fsError(dev, 5, 2)
	f.tp.setSBReadonly(dev, false)
	f.expect(q, "sb readonly 0x28 0/0", "sb error 0x28 5/2", "sb readonly 0x28 0/0")
	f.tp.detach(2) // /s still mounts the superblock
	f.expect(q)
	f.tp.detach(3)
	f.expect(q, "removal 40")
	if gone != 1 || f.tp.sbs[dev] != nil {
		t.Errorf("superblock watch not dropped: gone %d", gone)
	}
}
