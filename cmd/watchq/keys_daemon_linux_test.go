package main

import (
	"fmt"
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

// TestWatchKeysThroughDaemon: a user other than root watches a keyring it
// owns with --backend traced: watchq goes through watchqd's traced key
// source, says so, and prints the LINKED root's add_key makes; another
// uid, who may not view the keyring, is refused with EACCES.
func TestWatchKeysThroughDaemon(t *testing.T) {
	testenv.RequireRoot(t)
	sock, _ := startDaemon(t)
	for d := filepath.Dir(sock); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // the users' way to the socket
	}
	if r := run(t, nil, "stat", "--socket", sock); !strings.Contains(r.stdout, "key source traced") {
		testenv.Skip(t, "watchqd has no traced key source here:\n%s", r.stdout)
	}
	keySession(t)
	const owner, other = 64130, 64131
	ring := addKey(t, "keyring", fmt.Sprintf("wq-cli-daemon-%d", time.Now().UnixNano()), "", unix.KEY_SPEC_SESSION_KEYRING)
	if _, err := unix.KeyctlInt(unix.KEYCTL_CHOWN, ring, owner, owner, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.KeyctlSetperm(ring, 0x3f010000); err != nil { // possessor all, user (owner) view
		t.Fatal(err)
	}
	as := func(uid uint32, args ...string) *exec.Cmd {
		cmd := exec.Command(watchqBin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
		return cmd
	}
	args := []string{"watch", "keys", fmt.Sprintf("%d=5", ring), "--backend", "traced", "--socket", sock, "--count", "1", "--timeout", "30s"}
	p := startCmd(t, as(owner, args...))
	p.waitFor("the banner", 20*time.Second, func(_, stderr []string) bool {
		return strings.Contains(strings.Join(stderr, "\n"), "watchq: watching keys")
	})
	k := addKey(t, "user", "wq-cli-daemon-k", "v", ring)
	if code := p.wait(); code != 0 {
		t.Fatalf("watchq exited %d: %s", code, strings.Join(p.errLines(), "\n"))
	}
	if e := strings.Join(p.errLines(), "\n"); !strings.Contains(e, "traced backend through watchqd") {
		t.Errorf("banner does not name the backend:\n%s", e)
	}
	if o := p.out(); !strings.Contains(o, fmt.Sprintf("change=2[linked] aux=%d", k)) {
		t.Errorf("no LINKED of key %d:\n%s", k, o)
	}
	q := startCmd(t, as(other, args...))
	if code := q.wait(); code == 0 || !strings.Contains(strings.Join(q.errLines(), "\n"), "EACCES") {
		t.Errorf("uid %d watching uid %d's keyring: exit %d, %s", other, owner, code, strings.Join(q.errLines(), "\n"))
	}
}

// daemonKeyring adds a keyring to the session keyring for the daemon key
// tests: owned by uid, which may view it; others too (watchqd sees its
// gc, docs/keys.md).
func daemonKeyring(t *testing.T, name string, uid int) int {
	t.Helper()
	ring := addKey(t, "keyring", fmt.Sprintf("%s-%d", name, time.Now().UnixNano()), "", unix.KEY_SPEC_SESSION_KEYRING)
	if _, err := unix.KeyctlInt(unix.KEYCTL_CHOWN, ring, uid, uid, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.KeyctlSetperm(ring, 0x3f010001); err != nil { // possessor all, user and other view
		t.Fatal(err)
	}
	return ring
}

// TestWatchKeysDaemonWait: watchqd killed under "watchq watch keys" run
// through it (traced backend, a user other than root). Without --wait the
// watch prints its removal and the command exits with status 1 saying
// the daemon went away. With --wait, of three watches the one whose key
// went (its removal seen) is not placed again and the other is, after a
// loss line marking the gap: a key linked after the restart shows; a
// third, whose key went while the daemon was down, is refused on
// reconnection and ends with its removal line.
func TestWatchKeysDaemonWait(t *testing.T) {
	testenv.RequireRoot(t)
	d := newWatchqd(t, "user=0 watch=devices\n")
	for x := filepath.Dir(d.sock); x != os.TempDir() && x != "/"; x = filepath.Dir(x) {
		os.Chmod(x, 0o755) // the user's way to the socket
	}
	if r := run(t, nil, "stat", "--socket", d.sock); !strings.Contains(r.stdout, "key source traced") {
		testenv.Skip(t, "watchqd has no traced key source here:\n%s", r.stdout)
	}
	keySession(t)
	const owner = 64132
	as := func(args ...string) *proc {
		cmd := exec.Command(watchqBin, append(args, "--backend", "traced", "--socket", d.sock)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: owner, Gid: owner, Groups: []uint32{}}}
		p := startCmd(t, cmd)
		p.waitFor("the banner", 20*time.Second, func(_, stderr []string) bool {
			return strings.Contains(strings.Join(stderr, "\n"), "watchq: watching keys")
		})
		return p
	}

	x := daemonKeyring(t, "wq-wait-x", owner)
	p := as("watch", "keys", fmt.Sprintf("%d=5", x))
	d.stop(syscall.SIGKILL)
	want := "watchq: keys: watchqd at " + d.sock + " went away; start it again (systemctl start watchqd.socket) or watch with --wait to reconnect"
	if code, errs := p.wait(), p.errLines(); code != 1 || len(errs) == 0 || errs[len(errs)-1] != want {
		t.Errorf("without --wait: exit %d, stderr %q; want exit 1 and last line %q", code, errs, want)
	}
	if findLine(p.lines(), "REMOVAL of watchpoint 00000005", "") == "" {
		t.Errorf("without --wait: no removal line:\n%s", p.out())
	}
	d.start()

	y := daemonKeyring(t, "wq-wait-y", owner)
	z := daemonKeyring(t, "wq-wait-z", owner)
	p = as("watch", "keys", "--wait", fmt.Sprintf("%d=5", x), fmt.Sprintf("%d=6", y), fmt.Sprintf("%d=7", z))
	keyctl(t, "invalidate x", unix.KEYCTL_INVALIDATE, x, 0)
	p.waitFor("x's removal", 20*time.Second, func(out, _ []string) bool { return findLine(out, "REMOVAL of watchpoint 00000005", "") != "" })
	d.stop(syscall.SIGKILL)
	went := "watchq: keys: watchqd at " + d.sock + " went away; reconnecting (--wait); records meanwhile are lost (loss record)"
	p.waitFor("the reconnecting line", 20*time.Second, func(_, errs []string) bool { return findLine(errs, went, "") != "" })
	// z goes while no daemon watches it: on reconnection its watch is
	// refused, and ends as if removed.
	keyctl(t, "invalidate z", unix.KEYCTL_INVALIDATE, z, 0)
	d.start()
	notAgain := fmt.Sprintf("watchq: keys: key %08x tag 7 not watched again: ", z)
	p.waitFor("z not watched again", 20*time.Second, func(_, errs []string) bool { return findLine(errs, notAgain, "") != "" })
	reconnected := fmt.Sprintf("watchq: keys: reconnected to watchqd at %s; watching keys %08x tag 6 again", d.sock, y)
	p.waitFor("the reconnection", 20*time.Second, func(_, errs []string) bool { return findLine(errs, reconnected, "") != "" })
	k := addKey(t, "user", "wq-wait-k", "v", y)
	linked := fmt.Sprintf("change=2[linked] aux=%d", k)
	p.waitFor("the LINKED", 20*time.Second, func(out, _ []string) bool { return strings.Contains(strings.Join(out, "\n"), linked) })
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(); code != 0 {
		t.Errorf("--wait: exit status %d after SIGINT:\n%s", code, strings.Join(p.errLines(), "\n"))
	}
	loss, removals := -1, 0
	for i, l := range p.lines() {
		switch {
		case strings.HasPrefix(l, "REMOVAL"):
			removals++
		case strings.HasPrefix(l, "-- LOSS --") && loss < 0:
			loss = i
		case strings.Contains(l, linked) && loss < 0:
			t.Errorf("LINKED line %d before the loss line", i)
		}
	}
	if loss < 0 || removals != 2 {
		t.Errorf("--wait: loss line at %d, %d removal lines (want x's and z's):\n%s", loss, removals, p.out())
	}
}
