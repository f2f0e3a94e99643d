package daemon_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"golang.org/x/sys/unix"
)

// badFile is a FUSE file of zeros whose reads overlapping
// [badOff, badOff+badLen) fail with EIO: behind a loop device, an O_DIRECT
// read there fails in the block layer (block:block_rq_error). The same
// approach as source/device's tests (their helpers are internal to it).
type badFile struct {
	fs.Inode
	size, badOff, badLen int64
}

func (f *badFile) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *badFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode, out.Size = syscall.S_IFREG|0o444, uint64(f.size)
	return 0
}

func (f *badFile) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	end := max(min(off+int64(len(dest)), f.size), off)
	if off < f.badOff+f.badLen && end > f.badOff {
		return nil, syscall.EIO
	}
	clear(dest)
	return fuse.ReadResultData(dest[:end-off]), 0
}

// mountBadFile mounts a badFile and returns its path.
func mountBadFile(t *testing.T, size, badOff, badLen int64) string {
	testenv.RequireFile(t, "/dev/fuse")
	dir := t.TempDir()
	root := &fs.Inode{}
	file := &badFile{size: size, badOff: badOff, badLen: badLen}
	srv, err := fs.Mount(dir, root, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "watchqd-badfile", Name: "watchq"},
		OnAdd: func(ctx context.Context) {
			root.AddChild("disk", root.NewPersistentInode(ctx, file, fs.StableAttr{Mode: syscall.S_IFREG}), true)
		},
	})
	testenv.SkipIfUnsupported(t, "FUSE mount", err)
	t.Cleanup(func() { srv.Unmount() })
	return filepath.Join(dir, "disk")
}

// directRead reads 4 KiB at off with O_DIRECT (bypassing the page cache).
func directRead(path string, off int64) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	_, err = unix.Pread(fd, buf, off)
	return err
}

// TestDeviceUsers runs watchqd with its real device source and three
// unprivileged users: alice may watch block errors, carol block lifecycle,
// bob nothing. A loop device is attached over a FUSE file with a bad range
// (a real uevent: block lifecycle) and read where it is bad (a real
// block_rq_error: a block error). alice gets the error and not the
// lifecycle record; carol the lifecycle record and not the error; bob is
// refused with EACCES and a reason, and gets nothing.
func TestDeviceUsers(t *testing.T) {
	testenv.RequireRoot(t)
	losetup := testenv.RequireCommand(t, "losetup")
	alice, bob, carol := newUser(t, "al"), newUser(t, "bo"), newUser(t, "ca")
	conf := fmt.Sprintf("user=%s watch=block-errors\nuser=%s watch=block-lifecycle\n", alice.name, carol.name)
	e := startDaemon(t, conf, "-devices", "on")
	if strings.Contains(e.Log(), "block_errors=") && !strings.Contains(e.Log(), "block_errors=ok") {
		testenv.Skip(t, "the device source runs without block errors here:\n%s", e.Log())
	}
	root := e.dial(t)

	b := e.spawn(t, bob, "watch", "devices", "1")
	if l := expectPrefix(t, b, "WATCH ERR permission denied"); !strings.Contains(l, "granted none of usb, block-errors, block-lifecycle") {
		t.Errorf("bob's denial: %q", l)
	}
	a := e.spawn(t, alice, "watch", "devices", "1000")
	if l := expectPrefix(t, a, "WATCH OK"); l != "WATCH OK block-errors" {
		t.Errorf("alice: %q", l)
	}
	c := e.spawn(t, carol, "watch", "devices", "1000")
	if l := expectPrefix(t, c, "WATCH OK"); l != "WATCH OK block-lifecycle" {
		t.Errorf("carol: %q", l)
	}

	const badOff = 512 << 10
	disk := mountBadFile(t, 1<<20, badOff, 4096)
	out, err := exec.Command(losetup, "--find", "--show", "--read-only", disk).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", loop).Run() })
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	dev := watchq.KernelDev(unix.Major(st.Rdev), unix.Minor(st.Rdev))

	// carol: the lifecycle record for our loop device.
	for {
		r := parseRec(t, c.next(t))
		n, err := r.Block()
		if err != nil || watchq.IsBlockError(n.Subtype) {
			t.Fatalf("carol got %v (%v)", r, err)
		}
		if n.Dev == dev {
			break
		}
	}
	// alice: the block error, and before it nothing (lifecycle records are
	// denied to her).
	deadline := time.Now().Add(10 * time.Second)
	for directRead(loop, badOff) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the bad range never failed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := parseRec(t, a.next(t))
	n, err := r.Block()
	if err != nil || !watchq.IsBlockError(n.Subtype) || n.Dev != dev || n.Sector != badOff/512 || r.Tag() != 1 {
		t.Fatalf("alice got %v %+v (%v), want a block error on %#x sector %d", r, n, err, dev, badOff/512)
	}

	// The policy kept the other class out of each queue.
	s := rootStats(t, root)
	qa, _ := queueOf(s, alice.uid)
	qc, _ := queueOf(s, carol.uid)
	if qa.Denied == 0 || qc.Denied == 0 {
		t.Errorf("denied counts: alice %d, carol %d; want both > 0", qa.Denied, qc.Denied)
	}
	if _, ok := queueOf(s, bob.uid); ok && s.Entries != nil {
		if qb, _ := queueOf(s, bob.uid); qb.Watches != 0 || qb.Posted != 0 {
			t.Errorf("bob's queue: %+v", qb)
		}
	}
}
