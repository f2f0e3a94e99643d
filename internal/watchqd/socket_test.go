//go:build linux

package watchqd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/watchq/watchq/client"
	"golang.org/x/sys/unix"
)

// TestSocketModeFromCreation (issue 10 F5): the socket has its final mode
// from the moment its name exists, whatever the daemon's umask. An
// inotify watch on the directory sees the name created and never an
// attribute change on it (a chmod after bind is IN_ATTRIB), and a
// goroutine stat'ing the path all through startup never sees another
// mode.
func TestSocketModeFromCreation(t *testing.T) {
	for _, tc := range []struct {
		umask string
		mode  uint32
	}{
		{"077", 0o666}, // the default mode under a strict umask
		{"0", 0o600},
		{"022", 0o660},
	} {
		t.Run(fmt.Sprintf("umask%s-mode%o", tc.umask, tc.mode), func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "watchqd.sock")
			in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(in)
			if _, err := unix.InotifyAddWatch(in, dir, unix.IN_CREATE|unix.IN_ATTRIB|unix.IN_MOVED_TO); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			seen := make(map[uint32]int)
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					var st unix.Stat_t
					if unix.Lstat(sock, &st) == nil {
						seen[st.Mode]++
					}
				}
			})
			p := start(t, sock, tc.umask, "-socket-mode", strconv.FormatUint(uint64(tc.mode), 8))
			close(stop)
			wg.Wait()

			events := inotifyEvents(t, in)
			want := uint32(unix.S_IFSOCK) | tc.mode
			if got := events["watchqd.sock"]; !slices.Equal(got, []uint32{unix.IN_CREATE}) {
				t.Errorf("inotify events on the socket: %s; want IN_CREATE alone (its mode set at creation)", eventNames(got))
			}
			for m, n := range seen {
				if m != want {
					t.Errorf("the path had mode %#o (%d stats); want only %#o", m, n, want)
				}
			}
			var st unix.Stat_t
			if err := unix.Lstat(sock, &st); err != nil || st.Mode != want {
				t.Fatalf("socket mode %#o, %v; want %#o", st.Mode, err, want)
			}
			serves(t, sock)
			p.stop(t)
		})
	}
}

// inotifyEvents drains the inotify descriptor and returns each name's
// event masks in order.
func inotifyEvents(tb testing.TB, fd int) map[string][]uint32 {
	tb.Helper()
	evs := make(map[string][]uint32)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			return evs
		}
		if err != nil {
			tb.Fatal(err)
		}
		for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
			mask := binary.NativeEndian.Uint32(b[4:])
			l := binary.NativeEndian.Uint32(b[12:])
			name := string(bytes.TrimRight(b[unix.SizeofInotifyEvent:unix.SizeofInotifyEvent+l], "\x00"))
			evs[name] = append(evs[name], mask)
			b = b[unix.SizeofInotifyEvent+l:]
		}
	}
}

func eventNames(ms []uint32) string {
	names := map[uint32]string{unix.IN_CREATE: "IN_CREATE", unix.IN_ATTRIB: "IN_ATTRIB", unix.IN_MOVED_TO: "IN_MOVED_TO"}
	var s []string
	for _, m := range ms {
		if n, ok := names[m]; ok {
			s = append(s, n)
		} else {
			s = append(s, fmt.Sprintf("%#x", m))
		}
	}
	return "[" + strings.Join(s, " ") + "]"
}

// TestSocketDirRefused (issue 10 F5): watchqd refuses a socket directory
// that an unprivileged user could change (by owning or writing it or a
// directory above it), says why, and creates nothing there; a sticky
// world-writable directory above a safe one is fine.
func TestSocketDirRefused(t *testing.T) {
	u := newUser(t)
	for _, tc := range []struct {
		name string
		// setup prepares base and returns the socket directory.
		setup func(t *testing.T, base string) string
		want  string // in stderr, BASE standing for base; "" means watchqd must start
	}{
		{"world-writable", func(t *testing.T, base string) string {
			return mkdir(t, base, "run", 0o777, 0, 0)
		}, "is writable by group or others (mode 0777)"},
		{"world-writable-sticky", func(t *testing.T, base string) string {
			return mkdir(t, base, "run", 0o1777, 0, 0)
		}, "is writable by group or others (mode 01777)"},
		{"group-writable", func(t *testing.T, base string) string {
			return mkdir(t, base, "run", 0o775, 0, u.gid)
		}, "is writable by group or others (mode 0775)"},
		{"owned-by-user", func(t *testing.T, base string) string {
			return mkdir(t, base, "run", 0o755, u.uid, u.gid)
		}, fmt.Sprintf("is owned by uid %d", u.uid)},
		{"parent-owned-by-user", func(t *testing.T, base string) string {
			p := mkdir(t, base, "home", 0o755, u.uid, u.gid)
			return mkdir(t, p, "run", 0o755, 0, 0)
		}, fmt.Sprintf("BASE/home, above socket directory BASE/home/run, is owned by uid %d", u.uid)},
		{"parent-writable", func(t *testing.T, base string) string {
			p := mkdir(t, base, "shared", 0o777, 0, 0)
			return mkdir(t, p, "run", 0o755, 0, 0)
		}, "BASE/shared, above socket directory BASE/shared/run, is writable by group or others (mode 0777)"},
		{"missing-in-user-dir", func(t *testing.T, base string) string {
			p := mkdir(t, base, "home", 0o755, u.uid, u.gid)
			return filepath.Join(p, "run")
		}, fmt.Sprintf("is owned by uid %d", u.uid)},
		{"symlink-to-writable", func(t *testing.T, base string) string {
			mkdir(t, base, "shared", 0o777, 0, 0)
			l := filepath.Join(base, "link")
			if err := os.Symlink("shared", l); err != nil {
				t.Fatal(err)
			}
			return l
		}, "is writable by group or others"},
		{"parent-sticky", func(t *testing.T, base string) string {
			p := mkdir(t, base, "tmp", 0o1777, 0, 0)
			return mkdir(t, p, "run", 0o755, 0, 0)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			if err := os.Chmod(base, 0o755); err != nil {
				t.Fatal(err)
			}
			dir := tc.setup(t, base)
			sock := filepath.Join(dir, "watchqd.sock")
			if tc.want == "" {
				p := start(t, sock, "")
				serves(t, sock)
				p.stop(t)
				return
			}
			before := tree(t, base)
			spawn(t, sock, "").waitRefusal(t, strings.ReplaceAll(tc.want, "BASE", base))
			if after := tree(t, base); !slices.Equal(before, after) {
				t.Errorf("watchqd changed the tree under %s:\nbefore %q\nafter  %q", base, before, after)
			}
		})
	}
}

// mkdir makes parent/name with mode, owned by uid:gid, and returns it.
func mkdir(t *testing.T, parent, name string, mode os.FileMode, uid, gid int) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, uid, gid); err != nil {
		t.Fatal(err)
	}
	perm := mode.Perm()
	if mode&0o1000 != 0 {
		perm |= os.ModeSticky
	}
	if err := os.Chmod(d, perm); err != nil {
		t.Fatal(err)
	}
	return d
}

// tree lists every path under base with its mode.
func tree(t *testing.T, base string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v", p, fi.Mode()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSocketDirCreated: a missing socket directory (and one missing above
// it) is created with mode 0755 whatever the umask, so that clients can
// reach the socket.
func TestSocketDirCreated(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "run", "watchq")
	sock := filepath.Join(dir, "watchqd.sock")
	p := start(t, sock, "077")
	for _, d := range []string{filepath.Dir(dir), dir} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != os.ModeDir|0o755 {
			t.Errorf("%s has mode %v, want drwxr-xr-x", d, fi.Mode())
		}
	}
	serves(t, sock)
	p.stop(t)
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("left in %s after stop: %q", dir, names)
	}
}

// TestSecondDaemonRefused (issue 10 F6): a second watchqd on the same
// path exits with status 1 naming the first's pid, without touching its
// socket; the first keeps serving; stopping the first removes its socket
// and its lock.
func TestSecondDaemonRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	a := start(t, sock, "")
	ino := inode(t, sock)
	lock, err := os.ReadFile(sock + ".lock")
	if err != nil || string(lock) != fmt.Sprintf("%d\n", a.pid()) {
		t.Fatalf("lock file holds %q, %v; want %d", lock, err, a.pid())
	}

	b := spawn(t, sock, "")
	b.waitRefusal(t, fmt.Sprintf("another watchqd (pid %d) holds %s.lock", a.pid(), sock))
	if got := inode(t, sock); got != ino {
		t.Fatalf("the second watchqd replaced the socket: inode %v, was %v", got, ino)
	}
	serves(t, sock)

	// Again while a client of the first is connected and holds a queue:
	// the refusal never depends on the first being idle, nor disturbs its
	// clients.
	c, err := client.Dial(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, err := c.CreateQueue(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	spawn(t, sock, "").waitRefusal(t, "another watchqd")
	if _, err := q.SetSize(t.Context(), 16); err != nil {
		t.Fatalf("the first watchqd's client after the refusal: %v", err)
	}
	serves(t, sock)
	c.Close()

	a.stop(t)
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("left in %s after the first watchqd stopped: %q", dir, names)
	}
}

// TestSecondDaemonStopped (issue 10 F6): stopping the second watchqd
// (SIGTERM once it has refused, or once it runs if it does not) never
// unlinks or replaces the first's socket.
func TestSecondDaemonStopped(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	a := start(t, sock, "")
	ino := inode(t, sock)
	b := spawn(t, sock, "")
	select {
	case <-b.ready:
	case <-b.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("second watchqd neither ready nor gone after 30s")
	}
	b.cmd.Process.Signal(unix.SIGTERM)
	<-b.exited
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("after the second watchqd stopped: %v", err)
	}
	if got := inode(t, sock); got != ino {
		t.Fatalf("after the second watchqd stopped: socket inode %v, was %v", got, ino)
	}
	serves(t, sock)
	a.stop(t)
}

// TestStaleSocketRemoved: a socket left by a watchqd killed with SIGKILL
// (its lock file too) is replaced by the next watchqd, and so is one left
// by anything else that no process answers on.
func TestStaleSocketRemoved(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	a := start(t, sock, "")
	a.kill(t)
	if names := entries(t, dir); !slices.Equal(names, []string{"watchqd.sock", "watchqd.sock.lock"}) {
		t.Fatalf("after SIGKILL: %q", names)
	}
	b := start(t, sock, "")
	b.waitLog(t, "removed a stale socket")
	serves(t, sock)
	b.stop(t)

	// A dead socket with no lock file.
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	c := start(t, sock, "")
	serves(t, sock)
	c.stop(t)
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("left in %s: %q", dir, names)
	}
}

// TestLiveSocketKept: a socket some other program (taking no lock)
// serves at the path is neither unlinked nor replaced: watchqd refuses to
// start, and the socket keeps answering.
func TestLiveSocketKept(t *testing.T) {
	for _, network := range []string{"unixpacket", "unix", "unixgram"} {
		t.Run(network, func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "watchqd.sock")
			var closer interface{ Close() error }
			if network == "unixgram" {
				c, err := net.ListenUnixgram(network, &net.UnixAddr{Name: sock, Net: network})
				if err != nil {
					t.Fatal(err)
				}
				closer = c
			} else {
				l, err := net.ListenUnix(network, &net.UnixAddr{Name: sock, Net: network})
				if err != nil {
					t.Fatal(err)
				}
				closer = l
			}
			defer closer.Close()
			ino := inode(t, sock)
			spawn(t, sock, "").waitRefusal(t, "is a live socket")
			if got := inode(t, sock); got != ino {
				t.Fatalf("socket inode %v, was %v", got, ino)
			}
			c, err := net.Dial(network, sock)
			if err != nil {
				t.Fatalf("the other program's socket no longer answers: %v", err)
			}
			c.Close()
			if _, err := os.Stat(sock + ".lock"); err == nil {
				t.Error("lock file left behind")
			}
		})
	}
}

// TestNonSocketKept: a file that is not a socket at the path is left
// alone.
func TestNonSocketKept(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	if err := os.WriteFile(sock, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", sock+".lock"); err != nil {
		t.Fatal(err)
	}
	spawn(t, sock, "").waitRefusal(t, "lock file")
	os.Remove(sock + ".lock")
	spawn(t, sock, "").waitRefusal(t, "exists and is not a socket")
	if b, err := os.ReadFile(sock); err != nil || string(b) != "keep me" {
		t.Fatalf("file now %q, %v", b, err)
	}
}

// TestShutdownKeepsReplacedSocket: watchqd unlinks on the way out only the
// socket it bound: one an administrator put at the path meanwhile stays.
func TestShutdownKeepsReplacedSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	a := start(t, sock, "")
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ino := inode(t, sock)
	a.stop(t)
	if got := inode(t, sock); got != ino {
		t.Fatalf("socket inode %v, was %v", got, ino)
	}
	if !strings.Contains(a.Log(), "socket replaced by another file; leaving it") {
		t.Errorf("no word of the replaced socket in the log:\n%s", a.Log())
	}
	if _, err := os.Stat(sock + ".lock"); err == nil {
		t.Error("lock file left behind")
	}
}

// TestConcurrentStarts: of several watchqds started at once on one path,
// exactly one runs and the others refuse; and a watchqd stopping while
// others start never leaves two running or a lock naming a dead one.
func TestConcurrentStarts(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	const n = 6
	var ps []*proc
	for range n {
		ps = append(ps, spawn(t, sock, ""))
	}
	winner := onlyOne(t, ps)
	serves(t, sock)

	for range 5 {
		// Stop the running one while two more start.
		winner.cmd.Process.Signal(unix.SIGTERM)
		ps = []*proc{spawn(t, sock, ""), spawn(t, sock, "")}
		<-winner.exited
		var running []*proc
		for _, p := range ps {
			select {
			case <-p.ready:
				running = append(running, p)
			case <-p.exited:
				if p.code != 1 || !strings.Contains(p.Log(), "another watchqd") {
					t.Fatalf("watchqd %d exited with %d:\n%s", p.pid(), p.code, p.Log())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("watchqd %d neither ready nor gone after 30s", p.pid())
			}
		}
		// Both may have lost to the stopping one: start another.
		if len(running) == 0 {
			running = append(running, start(t, sock, ""))
		}
		if len(running) != 1 {
			t.Fatalf("%d watchqds running on one path", len(running))
		}
		winner = running[0]
		lock, err := os.ReadFile(sock + ".lock")
		if err != nil || string(lock) != fmt.Sprintf("%d\n", winner.pid()) {
			t.Fatalf("lock file holds %q, %v; want %d", lock, err, winner.pid())
		}
		serves(t, sock)
	}
	winner.stop(t)
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("left in %s: %q", dir, names)
	}
}

// onlyOne waits for every process to be ready or gone and returns the one
// that is ready, failing unless exactly one is and the others refused.
func onlyOne(t *testing.T, ps []*proc) *proc {
	t.Helper()
	var winner *proc
	for _, p := range ps {
		select {
		case <-p.ready:
			if winner != nil {
				t.Fatalf("watchqds %d and %d both running", winner.pid(), p.pid())
			}
			winner = p
		case <-p.exited:
			if p.code != 1 || !strings.Contains(p.Log(), "another watchqd") {
				t.Fatalf("watchqd %d exited with %d:\n%s", p.pid(), p.code, p.Log())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("watchqd %d neither ready nor gone after 30s", p.pid())
		}
	}
	if winner == nil {
		t.Fatal("no watchqd running")
	}
	return winner
}

// threadUmask reads the umask of the thread it runs on without setting
// it.
func threadUmask(t *testing.T) uint32 {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(n)
		}
	}
	t.Skip("no Umask in /proc/thread-self/status")
	return 0
}

// TestBindKeepsProcessUmask: binding changes only the binding thread's
// umask, never the one every other goroutine creates files under.
func TestBindKeepsProcessUmask(t *testing.T) {
	before := threadUmask(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	s, err := createSocket(sock, 0o666, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil || st.Mode&0o777 != 0o666 {
		t.Errorf("mode %#o, %v", st.Mode, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("left behind: %q", names)
	}
	// On every thread goroutines run on (the binding one is gone, or
	// wedged if it was the main thread), files get the old umask.
	var wg sync.WaitGroup
	for i := range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			if u := threadUmask(t); u != before {
				t.Errorf("a thread's umask is %#o after bind, was %#o", u, before)
			}
			f := filepath.Join(dir, strconv.Itoa(i))
			if err := os.WriteFile(f, nil, 0o666); err != nil {
				t.Error(err)
				return
			}
			if fi, err := os.Stat(f); err != nil || uint32(fi.Mode().Perm()) != 0o666&^before {
				t.Errorf("file created after bind: %v, %v; want %#o", fi.Mode(), err, 0o666&^before)
			}
		})
	}
	wg.Wait()
}

// TestBindFallback: without unshare(CLONE_FS) the socket gets at most the
// mode asked for, and watchqd refuses to start when the process umask
// took bits away, leaving nothing behind.
func TestBindFallback(t *testing.T) {
	old := unshareFS
	unshareFS = func() error { return unix.EPERM }
	t.Cleanup(func() { unshareFS = old })
	umask := threadUmask(t)
	log := slog.New(slog.DiscardHandler)

	ok := 0o666 &^ umask
	sock := filepath.Join(t.TempDir(), "watchqd.sock")
	s, err := createSocket(sock, ok, log)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil || st.Mode&0o777 != ok {
		t.Errorf("mode %#o, %v; want %#o", st.Mode, err, ok)
	}
	s.Close()

	if umask&0o666 == 0 {
		t.Skipf("umask %#o takes nothing from 0666", umask)
	}
	_, err = createSocket(sock, 0o666, log)
	if err == nil || !strings.Contains(err.Error(), "umask narrowed the mode") {
		t.Fatalf("createSocket under umask %#o without unshare: %v", umask, err)
	}
	if names := entries(t, filepath.Dir(sock)); len(names) != 0 {
		t.Errorf("left behind: %q", names)
	}
}
