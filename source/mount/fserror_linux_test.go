//go:build linux

package mount

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// TestFSErrorRecord: an ext4 image on a loop device backed by a FUSE file
// whose reads of one inode table block fail, mounted read-only in a
// private namespace; a lookup of the file whose inode is there fails with
// EIO, ext4 reports the error (ext4_error_inode_block: "unable to read
// itable block"), and a watch on the superblock gets exactly one error
// record: errno EIO, count 1, sb_id the loop device. Unmounting it ends the
// watch with a removal record.
func TestFSErrorRecord(t *testing.T) {
	img, off, n := devtest.Ext4Image(t)
	// The namespace first, so it holds no copy of the FUSE mount: a copy
	// would keep the FUSE filesystem alive after its unmount until the
	// namespace is gone.
	ns := newPrivateNS(t)
	backing := devtest.BadImage(t, img, off, n)
	loop := devtest.AttachLoop(t, backing, unix.LO_FLAGS_READ_ONLY)
	ns.mkdir("e")
	ns.mount(loop.Path, ns.p("e"), "ext4", unix.MS_RDONLY, "")
	mounted := true
	t.Cleanup(func() {
		if mounted {
			ns.umount(ns.p("e"), 0)
		}
	})
	src, _ := ns.open(Auto)
	testenv.SkipIfUnsupported(t, "FAN_FS_ERROR", src.Capabilities().FSErrors)
	q := newQueue(t, 64)
	if err := src.WatchSuperblock(q, ns.p("e"), tagSB, nil); err != nil {
		t.Fatal(err)
	}
	// A good lookup first: no error.
	if err := ns.do(func() error { _, err := os.Stat(ns.p("e/d/f00")); return err }); err != nil {
		t.Fatalf("stat of a good inode: %v", err)
	}
	if err := src.Sync(syncCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, src, ns.root, q); len(got) != 0 {
		t.Fatalf("records before the error: %q", got)
	}

	err := ns.do(func() error { _, err := os.Stat(ns.p("e/d/f39")); return err })
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("stat of the inode in the bad block: %v, want EIO", err)
	}
	if err := src.Sync(syncCtx(t)); err != nil {
		t.Fatal(err)
	}
	var recs []record.SuperblockNotification
	buf := make([]byte, 4096)
	for {
		k, err := q.TryRead(buf)
		if err != nil {
			break
		}
		for r, err := range record.Records(buf[:k]) {
			if err != nil {
				t.Fatal(err)
			}
			sb, err := r.Superblock()
			if err != nil {
				t.Fatalf("not a superblock record: %v (%v)", r, err)
			}
			recs = append(recs, sb)
		}
	}
	want := record.SuperblockNotification{Subtype: record.SuperblockError, Tag: tagSB, SBID: loop.Dev, ErrorNumber: uint32(unix.EIO), ErrorCookie: 1}
	if !slices.Equal(recs, []record.SuperblockNotification{want}) {
		t.Fatalf("records %+v, want exactly %+v", recs, want)
	}

	ns.umount(ns.p("e"), 0)
	mounted = false
	if err := src.Sync(syncCtx(t)); err != nil {
		t.Fatal(err)
	}
	k, err := q.TryRead(buf)
	if err != nil {
		t.Fatalf("after the unmount: %v, want a removal record", err)
	}
	rm, err := record.Record(buf[:k]).Removal()
	if err != nil || rm.ID != record.ObjectID(loop.Dev) || rm.Tag != tagSB {
		t.Fatalf("after the unmount: % x (%+v, %v), want the removal of %#x", buf[:k], rm, err, loop.Dev)
	}
}
