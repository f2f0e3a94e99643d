package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/internal/testenv"
)

// nobody is the unprivileged user the daemon tests run watchq as.
const nobody = 65534

// TestWatchMountsThroughDaemon: the mounts bar through watchqd. watchq
// runs as nobody in a private mount namespace; it is not root, so "watchq
// watch mounts --format json DIR" watches through a real watchqd (in the
// host namespace, granting watch=mounts), which looks DIR up in the
// client's namespace; a tmpfs mounted and unmounted there is reported as
// new-mount and unmount, in order, with the mount point resolved by the
// client. A "watch fs" there without the fs-errors grant is refused with
// the daemon's reason.
func TestWatchMountsThroughDaemon(t *testing.T) {
	testenv.RequireRoot(t)
	sock, _ := startDaemonConf(t, "* watch=mounts\n")
	dir := t.TempDir()
	// nobody must reach the socket; the daemon resolves DIR as root, and
	// its policy checks DIR's own search bits.
	for _, d := range []string{dir, filepath.Dir(dir), filepath.Dir(sock)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(watchqBin, "watch", "mounts", "--format", "json", "--count", "2", "--socket", sock, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS,
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	p := startCmd(t, cmd)
	stderr := strings.Join(p.waitReady(), "\n")
	if !strings.Contains(stderr, "watchq: mounts: watchqd at "+sock) {
		t.Fatalf("stderr does not say watchqd is used:\n%s", stderr)
	}
	pid := p.cmd.Process.Pid
	a := dir + "/a"
	inNS(t, pid, func() error { return os.Mkdir(a, 0o755) })
	inNS(t, pid, func() error { return unix.Mount("tmpfs", a, "tmpfs", 0, "") })
	p.waitFor("the new_mount record", 30*time.Second, func(out, _ []string) bool { return len(out) >= 1 })
	inNS(t, pid, func() error { return unix.Unmount(a, 0) })
	<-p.done
	if p.err != nil {
		t.Fatalf("watchq: %v\n%s", p.err, strings.Join(p.errLines(), "\n"))
	}
	checkMountPair(t, p, a)

	fs := exec.Command(watchqBin, "watch", "fs", "--count", "1", "--socket", sock, dir)
	fs.SysProcAttr = cmd.SysProcAttr
	out, err := fs.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not granted watch=fs-errors") || !strings.Contains(string(out), "EACCES") {
		t.Errorf("watch fs without the grant: %v\n%s", err, out)
	}
}

// TestWatchMountsDaemonGone: when watchqd goes away under "watchq watch
// mounts" run through it, the watch ends with its removal record and the
// command with status 1 and a line saying so, as watch devices does.
func TestWatchMountsDaemonGone(t *testing.T) {
	testenv.RequireRoot(t)
	sock, d := startDaemonConf(t, "* watch=mounts\n")
	dir := t.TempDir()
	for _, x := range []string{dir, filepath.Dir(dir), filepath.Dir(sock)} {
		if err := os.Chmod(x, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(watchqBin, "watch", "mounts", "--socket", sock, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS,
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	p := startCmd(t, cmd)
	p.waitReady()
	d.Process.Signal(syscall.SIGTERM)
	<-p.done
	if p.err == nil {
		t.Fatalf("watchq exited 0 after watchqd went away:\n%s", strings.Join(p.errLines(), "\n"))
	}
	if !strings.Contains(strings.Join(p.errLines(), "\n"), "went away") {
		t.Errorf("stderr does not say watchqd went away:\n%s", strings.Join(p.errLines(), "\n"))
	}
	if !strings.Contains(p.out(), "REMOVAL") {
		t.Errorf("no removal record:\n%s", p.out())
	}
}

// TestWatchMountsWait: under --wait, watchqd killed under "watchq watch
// mounts" run through it and started again on the same socket: the watch
// says so, marks the gap with a loss record (no removal), reconnects and
// places its watch again with the same tag (a tmpfs mounted after the
// restart is reported), and goes on until interrupted, as watch devices
// does (TestWatchWait).
func TestWatchMountsWait(t *testing.T) {
	testenv.RequireRoot(t)
	d := newWatchqd(t, "* watch=mounts\n")
	dir := t.TempDir()
	for _, x := range []string{dir, filepath.Dir(dir), filepath.Dir(d.sock)} {
		if err := os.Chmod(x, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(watchqBin, "watch", "mounts", "--wait", "--format", "json", "--socket", d.sock, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS,
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	p := startCmd(t, cmd)
	p.waitReady()
	d.stop(syscall.SIGKILL)
	went := "watchq: mounts: watchqd at " + d.sock + " went away; reconnecting (--wait); records meanwhile are lost (loss record)"
	p.waitFor("the reconnecting line", 20*time.Second, func(_, errs []string) bool { return findLine(errs, went, "") != "" })
	d.start()
	reconnected := "watchq: mounts: reconnected to watchqd at " + d.sock + "; watching mounts " + dir + " tag 2 again"
	p.waitFor("the reconnection", 20*time.Second, func(_, errs []string) bool { return findLine(errs, reconnected, "") != "" })

	pid := p.cmd.Process.Pid
	a := dir + "/a"
	inNS(t, pid, func() error { return os.Mkdir(a, 0o755) })
	inNS(t, pid, func() error { return unix.Mount("tmpfs", a, "tmpfs", 0, "") })
	p.waitFor("the new_mount record", 30*time.Second, func(out, _ []string) bool {
		for _, l := range out {
			if strings.Contains(l, `"event":"new-mount"`) {
				return true
			}
		}
		return false
	})
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(); code != 0 {
		t.Errorf("exit status %d after SIGINT:\n%s", code, strings.Join(p.errLines(), "\n"))
	}
	loss := -1
	mounted := false
	for i, l := range p.lines() {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		switch {
		case e["lost"] != nil:
			if loss < 0 {
				loss = i
			}
		case e["type"] == "meta":
			t.Errorf("record %d under --wait: %s", i, l)
		case e["event"] == "new-mount":
			mounted = true
			if loss < 0 {
				t.Errorf("new-mount record %d before the loss record", i)
			}
			if e["aux_mount_point"] != a || e["tag"] != float64(2) {
				t.Errorf("record %d: %s, want a new-mount of %s with tag 2", i, l, a)
			}
		}
	}
	if loss < 0 || !mounted {
		t.Errorf("loss record at %d, new-mount seen %v:\n%s", loss, mounted, p.out())
	}
}
