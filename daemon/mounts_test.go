//go:build linux

package daemon_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/mount"
	"golang.org/x/sys/unix"
)

func init() { attackRoles["mountwatch"] = mountWatchRole }

// mountWatchRole is a client that watches through watchqd: args are the
// socket, "mounts" or "fs", a path, how many records to print and,
// optionally, a second directory to watch (mounts, on the same queue)
// after them. It says "WATCH OK", "WATCH NOFSERR reason" or "WATCH ERR
// ERRNO reason", then "REC hex" per record, then "DONE" (or the second
// watch's "WATCH2 OK" or "WATCH2 ERR ..."), and stays until stdin closes.
func mountWatchRole(args []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	fail := func(what string, err error) int {
		var ce *client.Error
		if errors.As(err, &ce) {
			say("%s ERR %s %s", what, unix.ErrnoName(ce.Errno), ce.Reason)
		} else {
			say("%s ERR %v", what, err)
		}
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	c, err := client.Dial(ctx, args[0])
	if err != nil {
		return fail("DIAL", err)
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, 64)
	if err != nil {
		return fail("QUEUE", err)
	}
	if args[1] == "fs" {
		err = q.WatchSuperblock(ctx, args[2], 3)
		if errors.Is(err, mount.ErrNoFSErrors) {
			say("WATCH NOFSERR %v", err)
			io.Copy(io.Discard, os.Stdin)
			return 0
		}
	} else {
		err = q.WatchMount(ctx, args[2], 2)
	}
	if err != nil {
		return fail("WATCH", err)
	}
	say("WATCH OK")
	n, _ := strconv.Atoi(args[3])
	for range n {
		r, err := q.Next(ctx)
		if err != nil {
			return fail("READ", err)
		}
		say("REC %s", hex.EncodeToString(r))
	}
	if len(args) > 4 {
		if err := q.WatchMount(ctx, args[4], 4); err != nil {
			return fail("WATCH2", err)
		}
		say("WATCH2 OK")
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	say("DONE")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// testNS is a private mount namespace held by one locked OS thread, which
// never unlocks (the runtime ends the thread with its goroutine, and the
// namespace with it). Mounts are made, and client programs started, on
// that thread, so the clients live in the namespace.
type testNS struct {
	t     testing.TB
	calls chan func()
	root  string // a private tmpfs in the namespace (mode 0755)
}

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	testenv.RequireRoot(t)
	n := &testNS{t: t, calls: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNS): %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			ready <- fmt.Errorf("make / rprivate: %w", err)
			return
		}
		ready <- nil
		for f := range n.calls {
			f()
		}
	}()
	if err := <-ready; err != nil {
		testenv.Skip(t, "private mount namespace: %v", err)
	}
	t.Cleanup(func() { close(n.calls) })
	n.root = t.TempDir()
	if err := os.Chmod(n.root, 0o755); err != nil {
		t.Fatal(err)
	}
	n.mount("tmpfs", n.root, "tmpfs", 0, "mode=0755")
	return n
}

// do runs f on the namespace's thread.
func (n *testNS) do(f func() error) error {
	errc := make(chan error, 1)
	n.calls <- func() { errc <- f() }
	return <-errc
}

func (n *testNS) p(rel string) string { return filepath.Join(n.root, rel) }

func (n *testNS) mount(src, target, fstype string, flags uintptr, data string) {
	n.t.Helper()
	if err := n.do(func() error {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		return unix.Mount(src, target, fstype, flags, data)
	}); err != nil {
		n.t.Fatalf("mount %s on %s: %v", src, target, err)
	}
}

func (n *testNS) umount(target string) {
	n.t.Helper()
	if err := n.do(func() error { return unix.Unmount(target, 0) }); err != nil {
		n.t.Fatalf("umount %s: %v", target, err)
	}
}

// mountID is the 64-bit unique id of the mount at path in the namespace.
func (n *testNS) mountID(path string) uint64 {
	n.t.Helper()
	var st unix.Statx_t
	if err := n.do(func() error {
		return unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_MNT_ID_UNIQUE, &st)
	}); err != nil || st.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		testenv.Skip(n.t, "statx(STATX_MNT_ID_UNIQUE) of %s: %v (Linux 6.8)", path, err)
	}
	return st.Mnt_id
}

// spawn starts a mountwatch client as u in the namespace.
func (n *testNS) spawn(e *env, u *testUser, args ...string) *child {
	n.t.Helper()
	var c *child
	n.do(func() error { c = e.spawn(n.t, u, "mountwatch", args...); return nil })
	return c
}

// hostMount mounts a tmpfs at dir in the test's own (the host's) mount
// namespace, unmounted when the test ends.
func hostMount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// mountRec reads the child's next record and checks it is a mount record
// of subtype sub about mount aux.
func mountRec(t *testing.T, c *child, sub uint8, aux uint64) {
	t.Helper()
	r := parseRec(t, expectPrefix(t, c, "REC "))
	m, err := r.Mount()
	if err != nil || m.Subtype != sub || m.Aux != aux {
		t.Fatalf("record %v (%+v, %v), want a mount record subtype %d about mount %#x", r, m, err, sub, aux)
	}
}

// TestMountsThroughDaemon: an unprivileged user in a private mount
// namespace watches a directory of its namespace through a real watchqd
// (running in the host namespace), and sees a tmpfs mounted and unmounted
// there, in order, then the next mount, and nothing of the mounts made
// meanwhile in the host namespace. A root client in the host namespace
// watching the same path sees the host's mount and unmount, and nothing of
// the private namespace's. Both mount backends.
func TestMountsThroughDaemon(t *testing.T) {
	for _, b := range []string{"fanotify", "mountinfo"} {
		t.Run(b, func(t *testing.T) {
			u := newUser(t, "mnt")
			e := startDaemonEnv(t, fmt.Sprintf("user=%d watch=mounts\nuser=0 watch=mounts\n", u.uid), []string{mount.BackendEnv + "=" + b})
			ns := newTestNS(t)
			// The same path names a private tmpfs in ns and a plain
			// directory of the host's /tmp outside it.
			w := ns.root
			priv := ns.spawn(e, u, "mounts", w, "3")
			expectPrefix(t, priv, "WATCH OK")
			host := e.spawn(t, nil, "mountwatch", "mounts", w, "3")
			expectPrefix(t, host, "WATCH OK")

			// Each step waits for its record, so that the mountinfo
			// backend's rereads see every state (two changes between
			// rereads coalesce, as docs/mounts.md says); records of the
			// other namespace would show up before the next one.
			hm := func(rel string) uint64 {
				d := filepath.Join(w, rel)
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				hostMount(t, d)
				var st unix.Statx_t
				if err := unix.Statx(unix.AT_FDCWD, d, 0, unix.STATX_MNT_ID_UNIQUE, &st); err != nil {
					t.Fatal(err)
				}
				return st.Mnt_id
			}
			hid := hm("h")
			mountRec(t, host, record.MountNew, hid)
			ns.mount("tmpfs", ns.p("a"), "tmpfs", 0, "")
			aid := ns.mountID(ns.p("a"))
			mountRec(t, priv, record.MountNew, aid)
			ns.umount(ns.p("a"))
			mountRec(t, priv, record.MountUnmount, aid)
			if err := unix.Unmount(filepath.Join(w, "h"), 0); err != nil {
				t.Fatal(err)
			}
			mountRec(t, host, record.MountUnmount, hid)
			ns.mount("tmpfs", ns.p("end"), "tmpfs", 0, "")
			mountRec(t, priv, record.MountNew, ns.mountID(ns.p("end")))
			expectPrefix(t, priv, "DONE")
			mountRec(t, host, record.MountNew, hm("end"))
			expectPrefix(t, host, "DONE")
		})
	}
}

// TestMountsRefused: a user the policy does not grant watch=mounts is
// refused with EACCES and the reason; one granted mounts but not
// fs-errors is refused a superblock watch; the directory's search bits
// still rule; and each watch is charged to the uid: at its limit of one,
// a second watch (from another process of the uid) is EAGAIN, while
// refused ones were given back.
func TestMountsRefused(t *testing.T) {
	u, other := newUser(t, "mok"), newUser(t, "mno")
	e := startDaemon(t, fmt.Sprintf("user=%d watch=mounts\nlimits user=%d watches=1\n", u.uid, u.uid))
	ns := newTestNS(t)
	l := expectPrefix(t, ns.spawn(e, other, "mounts", ns.root, "1"), "WATCH ERR")
	if want := fmt.Sprintf("WATCH ERR EACCES uid %d", other.uid); !strings.HasPrefix(l, want) || !strings.Contains(l, "not granted watch=mounts") {
		t.Errorf("ungranted user: %q, want %q ... not granted watch=mounts", l, want)
	}
	l = expectPrefix(t, ns.spawn(e, u, "fs", ns.root, "1"), "WATCH ERR")
	if !strings.HasPrefix(l, "WATCH ERR EACCES") || !strings.Contains(l, "not granted watch=fs-errors") {
		t.Errorf("superblock watch with mounts only: %q", l)
	}
	// The directory's search bits still rule: 0700 root's.
	ns.do(func() error { return os.Mkdir(ns.p("closed"), 0o700) })
	l = expectPrefix(t, ns.spawn(e, u, "mounts", ns.p("closed"), "1"), "WATCH ERR")
	if !strings.HasPrefix(l, "WATCH ERR EACCES") {
		t.Errorf("watch on a 0700 directory of root's: %q", l)
	}
	// A watch ended by its mount's unmount is given back: the same
	// client then watches another directory at its limit of one.
	ns.mount("tmpfs", ns.p("m"), "tmpfs", 0, "mode=0755")
	ns.do(func() error { return os.Mkdir(ns.p("open"), 0o755) })
	c := ns.spawn(e, u, "mounts", ns.p("m"), "1", ns.p("open"))
	expectPrefix(t, c, "WATCH OK")
	l = expectPrefix(t, ns.spawn(e, u, "mounts", ns.p("open"), "1"), "WATCH ERR")
	if !strings.HasPrefix(l, "WATCH ERR EAGAIN") || !strings.Contains(l, "watches=1") {
		t.Errorf("second watch at a limit of one: %q", l)
	}
	ns.umount(ns.p("m"))
	if r, err := parseRec(t, expectPrefix(t, c, "REC ")).Removal(); err != nil || r.Tag != 2 {
		t.Fatalf("after the unmount: %+v, %v, want the watch's removal", r, err)
	}
	if l := c.next(t); l != "WATCH2 OK" {
		t.Errorf("a watch after the unmount ended the first, at a limit of one: %q", l)
	}
}

// TestFSErrorsThroughDaemon: an ext4 image on a loop device backed by a
// FUSE file failing reads of one inode table block, mounted in a private
// namespace; an unprivileged client there, granted fs-errors, watches its
// superblock through watchqd; a good lookup posts nothing, the bad one
// (EIO) exactly one superblock error record with errno 5, then the
// unmount a removal record.
func TestFSErrorsThroughDaemon(t *testing.T) {
	img, off, n := devtest.Ext4Image(t)
	u := newUser(t, "fse")
	e := startDaemon(t, fmt.Sprintf("user=%d watch=fs-errors\n", u.uid))
	ns := newTestNS(t) // before the FUSE mount, so it holds no copy of it
	loop := devtest.AttachLoop(t, devtest.BadImage(t, img, off, n), unix.LO_FLAGS_READ_ONLY)
	dir := ns.p("e")
	ns.mount(loop.Path, dir, "ext4", unix.MS_RDONLY, "")
	mounted := true
	t.Cleanup(func() {
		if mounted {
			ns.do(func() error { return unix.Unmount(dir, unix.MNT_DETACH) })
		}
	})
	c := ns.spawn(e, u, "fs", dir, "2")
	l := c.next(t)
	if strings.HasPrefix(l, "WATCH NOFSERR") {
		testenv.Skip(t, "FAN_FS_ERROR: %s", l)
	}
	if l != "WATCH OK" {
		t.Fatalf("watch: %q", l)
	}
	if err := ns.do(func() error { _, err := os.Stat(filepath.Join(dir, "d/f00")); return err }); err != nil {
		t.Fatalf("stat of a good inode: %v", err)
	}
	err := ns.do(func() error { _, err := os.Stat(filepath.Join(dir, "d/f39")); return err })
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("stat of the inode in the bad block: %v, want EIO", err)
	}
	ns.umount(dir)
	mounted = false

	r := parseRec(t, expectPrefix(t, c, "REC "))
	sb, err := r.Superblock()
	want := record.SuperblockNotification{Subtype: record.SuperblockError, Tag: 3, SBID: loop.Dev, ErrorNumber: uint32(syscall.EIO), ErrorCookie: 1}
	if err != nil || sb != want {
		t.Fatalf("first record %v (%+v, %v), want exactly %+v", r, sb, err, want)
	}
	r = parseRec(t, expectPrefix(t, c, "REC "))
	if rm, err := r.Removal(); err != nil || rm.ID != record.ObjectID(loop.Dev) || rm.Tag != 3 {
		t.Fatalf("second record %v (%+v, %v), want the removal of %#x", r, rm, err, loop.Dev)
	}
	expectPrefix(t, c, "DONE")
}

func init() { attackRoles["connect-pass"] = connectPassRole }

// connectPassRole connects to the socket (args[0]), hands the connection to
// its parent over fd 3 (SCM_RIGHTS) and exits: a connection whose
// connecting process is gone.
func connectPassRole(args []string) int {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: args[0], Net: "unixpacket"})
	if err != nil {
		fmt.Println("DIAL ERR", err)
		return 1
	}
	f, err := c.File()
	if err != nil {
		return 1
	}
	if err := unix.Sendmsg(3, []byte{1}, unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		fmt.Println("SEND ERR", err)
		return 1
	}
	return 0
}

// TestMountsConnectorGone: a connection whose connecting process has
// exited (and been reaped: its pid free for reuse) is refused mount
// watches with ESRCH and the reason, instead of watching in whatever
// namespace a process that took its pid lives in; its other requests
// still work.
func TestMountsConnectorGone(t *testing.T) {
	testenv.RequireRoot(t)
	e := startDaemon(t, "* watch=mounts\n")
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(sp[0]), "mine"), os.NewFile(uintptr(sp[1]), "theirs")
	defer mine.Close()
	cmd := exec.Command(e.bin)
	cmd.Env = childEnv(roleEnv+"=connect-pass", "WATCHQD_ARGS="+e.sock)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	buf, oob := make([]byte, 8), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sp[0], buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil { // reaped
		t.Fatalf("connect-pass: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("no fd from the child: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("no fd from the child: %v", err)
	}
	f := os.NewFile(uintptr(fds[0]), "conn")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	r := &raw{c: fc.(*net.UnixConn)}
	t.Cleanup(func() {
		r.c.Close()
		for _, fd := range r.fds {
			unix.Close(fd)
		}
	})
	r.expect(t, rawMsg(uint16(protocol.OpHello), 1, u32(protocol.Version)), 0)
	q := r.createQueue(t)
	body, _ := protocol.WatchMount{Queue: q, Tag: 2, Path: "/"}.AppendBinary(nil)
	rest := r.expect(t, rawMsg(uint16(protocol.OpWatchMount), 2, body), syscall.ESRCH)
	if !strings.Contains(string(rest), "has exited") {
		t.Errorf("reason %q does not say the connecting process exited", rest)
	}
	r.expect(t, rawMsg(uint16(protocol.OpCloseQueue), 3, u32(q)), 0)
}
