//go:build linux

package keys

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
)

// helperEnv makes the test binary act as one side of TestSecurityTwoUsers.
const helperEnv = "WATCHQ_KEYS_HELPER"

// The two unprivileged users. useradd creates them where it exists; the
// vmtest guest has no passwd database, and there the fallback ids serve (the
// kernel needs no account behind a uid).
var testUsers = [2]struct {
	name     string
	fallback uint32
}{{"wq-alice", 64001}, {"wq-bob", 64002}}

func testUser(t *testing.T, i int) uint32 {
	name := testUsers[i].name
	if u, err := user.Lookup(name); err == nil {
		id, _ := strconv.Atoi(u.Uid)
		return uint32(id)
	}
	if p, err := exec.LookPath("useradd"); err == nil {
		out, err := exec.Command(p, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if err != nil {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("userdel", name).Run() })
		u, err := user.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := strconv.Atoi(u.Uid)
		return uint32(id)
	}
	t.Logf("no useradd: running %s as bare uid %d", name, testUsers[i].fallback)
	return testUsers[i].fallback
}

// helperProc is a copy of the test binary running as another user, talked
// to line by line.
type helperProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startHelper(t *testing.T, bin string, uid uint32, args ...string) *helperProc {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^TestKeysHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, " "))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	must(t, "stdin", err)
	out, err := cmd.StdoutPipe()
	must(t, "stdout", err)
	must(t, "start helper", cmd.Start())
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	return &helperProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
}

func (h *helperProc) say(t *testing.T, line string) {
	t.Helper()
	if _, err := fmt.Fprintln(h.in, line); err != nil {
		t.Fatalf("helper: %v", err)
	}
}

func (h *helperProc) expectLine(t *testing.T) string {
	t.Helper()
	for h.out.Scan() {
		l := h.out.Text()
		if strings.HasPrefix(l, "> ") {
			return strings.TrimPrefix(l, "> ")
		}
	}
	t.Fatalf("helper ended: %v", h.out.Err())
	return ""
}

// TestSecurityTwoUsers: alice owns a key bob may not view; bob cannot watch
// it (EACCES, as keyctl_watch_key's KEY_NEED_VIEW lookup refuses) and hears
// nothing when alice changes it, while his own key's records do reach him.
func TestSecurityTwoUsers(t *testing.T) {
	testenv.RequireRoot(t)
	alice, bob := testUser(t, 0), testUser(t, 1)
	dir, err := os.MkdirTemp("", "watchq-keys-sec")
	must(t, "tempdir", err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, "chmod", os.Chmod(dir, 0o755))
	self, err := os.Executable()
	must(t, "executable", err)
	bin := filepath.Join(dir, "keys.test")
	data, err := os.ReadFile(self)
	must(t, "read self", err)
	must(t, "copy self", os.WriteFile(bin, data, 0o755))

	backends := []Backend{Poll}
	if kernel.Probe() == nil {
		backends = append(backends, Kernel)
	}
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			owner := startHelper(t, bin, alice, "owner")
			serial := owner.expectLine(t)
			w := startHelper(t, bin, bob, "watcher", serial, b.String())
			if got := w.expectLine(t); got != "watch: EACCES" {
				t.Fatalf("bob watching alice's key %s: %q, want EACCES", serial, got)
			}
			if got := w.expectLine(t); got != "own: ok" {
				t.Fatalf("bob watching his own key: %q", got)
			}
			owner.say(t, "change")
			if got := owner.expectLine(t); got != "changed" {
				t.Fatalf("owner: %q", got)
			}
			w.say(t, "check")
			if got := w.expectLine(t); got != "records: own updated tag9" {
				t.Errorf("bob's queue: %q, want only his own key's UPDATED", got)
			}
		})
	}
}

// TestKeysHelperProcess is the other side of TestSecurityTwoUsers; it does
// nothing unless $WATCHQ_KEYS_HELPER is set.
func TestKeysHelperProcess(t *testing.T) {
	args := strings.Fields(os.Getenv(helperEnv))
	if len(args) == 0 {
		t.Skip("helper process only")
	}
	in := bufio.NewScanner(os.Stdin)
	say := func(f string, a ...any) { fmt.Printf("> "+f+"\n", a...) }
	switch args[0] {
	case "owner":
		// Possessor everything, user (alice) view; nothing for others.
		id, err := unix.AddKey("user", "wq-secret", []byte("s1"), unix.KEY_SPEC_USER_KEYRING)
		if err != nil {
			say("add_key: %v", err)
			os.Exit(1)
		}
		unix.KeyctlSetperm(id, 0x3f010000)
		say("%d", id)
		for in.Scan() {
			if in.Text() == "change" {
				unix.KeyctlBuffer(unix.KEYCTL_UPDATE, id, []byte("s2"), 0)
				unix.KeyctlSetperm(id, 0x3f030000)
				unix.KeyctlInt(unix.KEYCTL_SET_TIMEOUT, id, 3600, 0, 0)
				say("changed")
			}
		}
		unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_USER_KEYRING, 0, 0)
	case "watcher":
		serial, _ := strconv.Atoi(args[1])
		be := Poll
		if args[2] == "kernel" {
			be = Kernel
		}
		src, err := Open(context.Background(), Config{Engine: watchq.NewEngine(watchq.Config{}), Backend: be, Interval: time.Hour})
		if err != nil {
			say("open: %v", err)
			os.Exit(1)
		}
		q := watchq.NewQueue()
		q.SetSize(64)
		err = src.Watch(q, int32(serial), 1, nil)
		switch {
		case errors.Is(err, unix.EACCES):
			say("watch: EACCES")
		default:
			say("watch: %v", err)
		}
		own, err := unix.AddKey("user", "wq-own", []byte("o1"), unix.KEY_SPEC_USER_KEYRING)
		if err == nil {
			unix.KeyctlSetperm(own, 0x3f3f0000)
			err = src.Watch(q, int32(own), 9, nil)
		}
		say("own: %s", errString(err))
		for in.Scan() {
			if in.Text() != "check" {
				continue
			}
			unix.KeyctlBuffer(unix.KEYCTL_UPDATE, own, []byte("o2"), 0)
			src.Sync(context.Background())
			var got []string
			buf := make([]byte, 4096)
			for {
				n, err := q.TryRead(buf)
				if err != nil {
					break
				}
				for r := range record.Records(buf[:n]) {
					e := toEv(t, r)
					name := fmt.Sprint(e.key)
					if e.key == int32(own) {
						name = "own"
					}
					got = append(got, fmt.Sprintf("%s %s tag%d", name, e.sub, e.tag))
				}
			}
			say("records: %s", strings.Join(got, "; "))
		}
		unix.KeyctlInt(unix.KEYCTL_UNLINK, own, unix.KEY_SPEC_USER_KEYRING, 0, 0)
		src.Close()
	}
	os.Exit(0)
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
