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
