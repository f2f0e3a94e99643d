//go:build linux

package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/internal/watchqd"
	"github.com/watchq/watchq/record"
)

// The test binary doubles as watchqd and as client programs: the parent
// test re-executes it with WATCHQD_ROLE set, as root (the daemon) or under
// another user's credentials (clients).
const roleEnv = "WATCHQD_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, strings.Split(os.Getenv("WATCHQD_ARGS"), "\x1f")))
	}
	release := devtest.LockHost()
	code := m.Run()
	release()
	os.Exit(code)
}

// nofileEnv, when set, is the RLIMIT_NOFILE (soft and hard) a child role
// runs under.
const nofileEnv = "WATCHQD_NOFILE"

// runRole runs a child role and returns its exit status.
func runRole(role string, args []string) int {
	if s := os.Getenv(nofileEnv); s != "" {
		n, _ := strconv.ParseUint(s, 10, 64)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			fmt.Fprintf(os.Stderr, "setrlimit %d: %v\n", n, err)
			return 1
		}
	}
	if role == "daemon" {
		return watchqd.Main(args)
	}
	if f, ok := attackRoles[role]; ok {
		return f(args)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	say, sayErr := roleOutput()
	fail := func(what string, err error) int {
		sayErr(what, err)
		return 0
	}
	// args: socket, then role-specific.
	c, err := client.Dial(ctx, args[0])
	if err != nil {
		return fail("DIAL", err)
	}
	defer c.Close()
	switch role {
	case "watch", "hold":
		// args: socket, "devices" or a publisher type, count
		q, err := c.CreateQueue(ctx, 64)
		if err != nil {
			return fail("QUEUE", err)
		}
		if args[1] == "devices" {
			s, err := q.WatchDevices(ctx, 1)
			if err != nil {
				return fail("WATCH", err)
			}
			say("WATCH OK %v", s)
		} else {
			t, _ := strconv.ParseUint(args[1], 0, 32)
			if err := q.WatchPublisher(ctx, record.Type(t), 2); err != nil {
				return fail("WATCH", err)
			}
			say("WATCH OK")
		}
		n, _ := strconv.Atoi(args[2])
		for i := 0; role == "hold" || i < n; i++ {
			r, err := q.Next(ctx)
			if err != nil {
				return fail("READ", err)
			}
			say("REC %s", hex.EncodeToString(r))
		}
		say("DONE")
		// Stay until the parent closes stdin, so the queue lives on.
		io.Copy(io.Discard, os.Stdin)
	case "publish":
		// args: socket, type, count
		t, _ := strconv.ParseUint(args[1], 0, 32)
		n, _ := strconv.Atoi(args[2])
		for i := range n {
			if err := c.Publish(ctx, pubRecord(record.Type(t), uint8(i))); err != nil {
				return fail("PUB", err)
			}
		}
		say("PUB OK")
	}
	return 0
}

// pubRecord is a 16-byte publisher record of type t, subtype sub.
func pubRecord(t record.Type, sub uint8) []byte {
	b := make([]byte, 16)
	h := record.Header{Type: t, Subtype: sub, Info: record.MakeInfo(16, 0, 0)}
	h.Put(b)
	copy(b[8:], fmt.Sprintf("seq%05d", sub))
	return b
}

// env is one test's daemon: a child process running watchqd on a socket in
// a world-readable temporary directory.
type env struct {
	dir, sock, conf string
	bin             string // the test binary, copied where every user may run it
	cmd             *exec.Cmd
	notify          *net.UnixConn
	logMu           sync.Mutex
	log             bytes.Buffer
}

// startDaemon starts watchqd with conf as watchqd.conf and extra flags, and
// waits for its READY=1 (sd_notify, through NOTIFY_SOCKET).
func startDaemon(tb testing.TB, conf string, flags ...string) *env {
	tb.Helper()
	return startDaemonEnv(tb, conf, nil, flags...)
}

// startDaemonEnv is startDaemon with extra environment variables (such as
// nofileEnv) for the daemon.
func startDaemonEnv(tb testing.TB, conf string, extra []string, flags ...string) *env {
	tb.Helper()
	return startDaemonBin(tb, "", conf, extra, flags...)
}

// startRealDaemon is startDaemon running cmd/watchqd, built without the
// race detector (whose shadow memory would hide what the daemon gives
// back), instead of this test binary.
func startRealDaemon(tb testing.TB, conf string, flags ...string) *env {
	tb.Helper()
	gobin := testenv.RequireCommand(tb, "go")
	bin := filepath.Join(tb.TempDir(), "watchqd")
	if out, err := exec.Command(gobin, "build", "-o", bin, "../cmd/watchqd").CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return startDaemonBin(tb, bin, conf, nil, flags...)
}

// childEnv is the environment of child processes: this one's, with the
// race detector's one-second sleep at exit (atexit_sleep_ms, there so that
// reports of other threads are not cut short) turned off, since every test
// waits for its daemon to exit.
func childEnv(extra ...string) []string {
	env := os.Environ()
	gorace := "atexit_sleep_ms=0"
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			gorace = v + " " + gorace
			env = append(env[:i:i], env[i+1:]...)
			break
		}
	}
	return append(append(env, "GORACE="+gorace), extra...)
}

// startDaemonBin starts watchqd: program prog if set, else this test
// binary in its daemon role.
func startDaemonBin(tb testing.TB, prog, conf string, extra []string, flags ...string) *env {
	tb.Helper()
	dir, err := os.MkdirTemp("", "watchqd-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	e := &env{dir: dir, sock: filepath.Join(dir, "watchqd.sock"), conf: filepath.Join(dir, "watchqd.conf"), bin: filepath.Join(dir, "watchqd.test")}
	e.writeConf(tb, conf)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(e.bin, self, 0o755); err != nil {
		tb.Fatal(err)
	}
	ns := filepath.Join(dir, "notify")
	e.notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.notify.Close() })
	args := append([]string{"-socket", e.sock, "-config", e.conf, "-log-level", "debug"}, flags...)
	if prog != "" {
		e.cmd = exec.Command(prog, args...)
		e.cmd.Env = childEnv(append([]string{"NOTIFY_SOCKET=" + ns}, extra...)...)
	} else {
		e.cmd = exec.Command(e.bin)
		e.cmd.Env = childEnv(append([]string{roleEnv + "=daemon", "WATCHQD_ARGS=" + strings.Join(args, "\x1f"), "NOTIFY_SOCKET=" + ns}, extra...)...)
	}
	e.cmd.Stderr = &lockedWriter{e}
	if err := e.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		e.cmd.Wait()
		if tb.Failed() {
			tb.Logf("watchqd log:\n%s", e.Log())
		}
	})
	e.waitNotify(tb, "READY=1")
	return e
}

type lockedWriter struct{ e *env }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.e.logMu.Lock()
	defer w.e.logMu.Unlock()
	return w.e.log.Write(p)
}

// Log returns what the daemon has logged so far.
func (e *env) Log() string {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.log.String()
}

func (e *env) writeConf(tb testing.TB, conf string) {
	tb.Helper()
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// waitNotify waits for a notification containing want.
func (e *env) waitNotify(tb testing.TB, want string) {
	tb.Helper()
	buf := make([]byte, 4096)
	e.notify.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		n, err := e.notify.Read(buf)
		if err != nil {
			tb.Fatalf("waiting for %q from watchqd: %v\nlog:\n%s", want, err, e.Log())
		}
		if strings.Contains(string(buf[:n]), want) {
			return
		}
	}
}

// reload rewrites the configuration, sends SIGHUP and waits for the
// daemon to be ready again.
func (e *env) reload(tb testing.TB, conf string) {
	tb.Helper()
	e.writeConf(tb, conf)
	e.cmd.Process.Signal(syscall.SIGHUP)
	e.waitNotify(tb, "RELOADING=1")
	e.waitNotify(tb, "READY=1")
}

// fds counts the daemon's open file descriptors.
func (e *env) fds(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", e.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// dial connects a client in this process.
func (e *env) dial(tb testing.TB) *client.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, e.sock)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// child is a client program running as another process.
type child struct {
	cmd   *exec.Cmd
	lines chan string
	stdin io.WriteCloser
}

// spawn runs role as u (nil: as this process's user) with args after the
// socket path.
func (e *env) spawn(tb testing.TB, u *testUser, role string, args ...string) *child {
	tb.Helper()
	return e.spawnEnv(tb, u, nil, role, args...)
}

// spawnEnv is spawn with extra environment variables.
func (e *env) spawnEnv(tb testing.TB, u *testUser, extra []string, role string, args ...string) *child {
	tb.Helper()
	cmd := exec.Command(e.bin)
	cmd.Env = childEnv(append([]string{roleEnv + "=" + role, "WATCHQD_ARGS=" + strings.Join(append([]string{e.sock}, args...), "\x1f")}, extra...)...)
	if u != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	ch := &child{cmd: cmd, lines: make(chan string, 1024), stdin: stdin}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ch.lines <- sc.Text()
		}
		close(ch.lines)
	}()
	tb.Cleanup(func() { ch.stop() })
	return ch
}

// next returns the child's next output line, failing after 20 seconds.
func (c *child) next(tb testing.TB) string {
	tb.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			tb.Fatalf("child %d exited early", c.cmd.Process.Pid)
		}
		return l
	case <-time.After(20 * time.Second):
		tb.Fatalf("child %d: no output for 20s", c.cmd.Process.Pid)
	}
	return ""
}

func (c *child) stop() {
	c.stdin.Close()
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// testUser is an unprivileged user created for the test with useradd and
// removed with userdel when it ends.
type testUser struct {
	name     string
	uid, gid uint32
}

func newUser(tb testing.TB, tag string) *testUser {
	tb.Helper()
	testenv.RequireRoot(tb)
	testenv.RequireCommand(tb, "useradd")
	testenv.RequireCommand(tb, "userdel")
	name := fmt.Sprintf("wqd%s%d", tag, os.Getpid()%100000)
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		tb.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			tb.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	out, err := exec.Command("id", "-u", name).Output()
	if err != nil {
		tb.Fatal(err)
	}
	uid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	out, err = exec.Command("id", "-g", name).Output()
	if err != nil {
		tb.Fatal(err)
	}
	gid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return &testUser{name: name, uid: uint32(uid), gid: uint32(gid)}
}

// expectPrefix reads the child's next line and checks its prefix.
func expectPrefix(tb testing.TB, c *child, prefix string) string {
	tb.Helper()
	l := c.next(tb)
	if !strings.HasPrefix(l, prefix) {
		tb.Fatalf("child said %q, want prefix %q", l, prefix)
	}
	return l
}

// parseRec decodes a "REC <hex>" line.
func parseRec(tb testing.TB, l string) record.Record {
	tb.Helper()
	b, err := hex.DecodeString(strings.TrimPrefix(l, "REC "))
	if err != nil || !strings.HasPrefix(l, "REC ") {
		tb.Fatalf("not a record line: %q", l)
	}
	return record.Record(b)
}

// roleOutput is a role's side of the line protocol on stdout: say prints
// one line, sayErr a failed request as "WHAT ERR ERRNO REASON" (a
// client.Error) or "WHAT ERR ERROR".
func roleOutput() (say func(format string, a ...any), sayErr func(what string, err error)) {
	out := bufio.NewWriter(os.Stdout)
	say = func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...); out.Flush() }
	sayErr = func(what string, err error) {
		var ce *client.Error
		if errors.As(err, &ce) {
			say("%s ERR %s %s", what, ce.Errno.Error(), ce.Reason)
		} else {
			say("%s ERR %v", what, err)
		}
	}
	return say, sayErr
}
