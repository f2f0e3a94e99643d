package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/watchq/watchq/internal/testenv"
)

// newAccount creates a system user (with its own group) or, with group,
// a group, for the test, and removes it when the test ends. It returns
// the id.
func newAccount(t *testing.T, name string, group bool) uint32 {
	t.Helper()
	add, del, idFlag := "useradd", "userdel", "-u"
	args := []string{"--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name}
	if group {
		add, del, idFlag = "groupadd", "groupdel", "-g"
		args = []string{"--system", name}
	}
	testenv.RequireCommand(t, add)
	testenv.RequireCommand(t, del)
	if out, err := exec.Command(add, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", add, name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(del, name).CombinedOutput(); err != nil {
			t.Errorf("%s %s: %v: %s", del, name, err, out)
		}
	})
	if group {
		out, err := exec.Command("getent", "group", name).Output()
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Split(strings.TrimSpace(string(out)), ":")
		id, _ := strconv.Atoi(f[2])
		return uint32(id)
	}
	out, err := exec.Command("id", idFlag, name).Output()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return uint32(id)
}

// TestDialErrors: a real unprivileged user runs "watchq stat" against the
// real watchqd whose socket is mode 0660 root:GROUP: refused, it says the
// socket exists, its mode and owners, and the group to join with the
// command; with that group it connects. Against a socket nobody listens
// on, it says watchqd is not running and how to start it.
func TestDialErrors(t *testing.T) {
	testenv.RequireRoot(t)
	if watchqdErr != nil {
		t.Fatal(watchqdErr)
	}
	suffix := strconv.Itoa(os.Getpid() % 100000)
	uname, gname := "wqcli"+suffix, "wqclig"+suffix
	uid := newAccount(t, uname, false)
	gid := newAccount(t, gname, true)

	dir, err := os.MkdirTemp("", "watchq-dial-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, conf := filepath.Join(dir, "watchqd.sock"), filepath.Join(dir, "watchqd.conf")
	if err := os.WriteFile(conf, []byte("user=0 watch=devices\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon := exec.Command(watchqdBin, "-socket", sock, "-socket-mode", "0660", "-config", conf, "-devices", "off")
	var log strings.Builder
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Signal(syscall.SIGTERM)
		daemon.Wait()
		if t.Failed() {
			t.Logf("watchqd log:\n%s", log.String())
		}
	})
	(&watchqd{t: t, sock: sock, exited: make(chan struct{})}).waitAnswer()
	if err := os.Chown(sock, 0, int(gid)); err != nil {
		t.Fatal(err)
	}

	as := func(groups []uint32, socket string) result {
		t.Helper()
		cmd := exec.Command(watchqBin, "stat", "--socket", socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: groups}}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return result{out.String(), errb.String(), code}
	}
	r := as([]uint32{}, sock)
	want := fmt.Sprintf("watchq: watchqd at %s: socket exists but you may not connect (mode 0660 root:%s; join group %s: sudo usermod -aG %s %s, then log in again)\n", sock, gname, gname, gname, uname)
	if r.code != 1 || r.stderr != want {
		t.Errorf("stat refused: exit %d, stderr %q; want 1, %q", r.code, r.stderr, want)
	}
	if r := as([]uint32{gid}, sock); r.code != 0 || !strings.HasPrefix(r.stdout, "watchqd at "+sock) {
		t.Errorf("stat in group %s: exit %d, stdout %q, stderr %q", gname, r.code, r.stdout, r.stderr)
	}
	none := filepath.Join(dir, "none.sock")
	r = as([]uint32{}, none)
	want = "watchq: watchqd at " + none + ": not running (no such file or directory; start it: systemctl start watchqd.socket)\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("stat without a daemon: exit %d, stderr %q; want 1, %q", r.code, r.stderr, want)
	}
}
