//go:build linux

package watchqd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	"github.com/watchq/watchq/internal/testenv"
	"golang.org/x/sys/unix"
)

// The test binary doubles as watchqd: a test re-executes it with roleEnv
// set to run Main with the arguments in argsEnv (separated by \x1f),
// under the umask in umaskEnv (octal) when set. This package's TestMain
// takes no host lock (devtest.LockHost): its daemons run without the
// device source, and its fuzz workers must never wait on the lock.
const (
	roleEnv  = "WATCHQD_TEST_ROLE"
	argsEnv  = "WATCHQD_TEST_ARGS"
	umaskEnv = "WATCHQD_TEST_UMASK"
)

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "daemon" {
		if u := os.Getenv(umaskEnv); u != "" {
			n, err := strconv.ParseUint(u, 8, 32)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bad", umaskEnv, u)
				os.Exit(3)
			}
			unix.Umask(int(n))
		}
		os.Exit(Main(strings.Split(os.Getenv(argsEnv), "\x1f")))
	}
	os.Exit(m.Run())
}

// proc is a watchqd child process.
type proc struct {
	cmd    *exec.Cmd
	sock   string
	ready  chan struct{} // closed at READY=1
	exited chan struct{} // closed when the process has been waited for
	code   int           // exit status, once exited is closed

	mu  sync.Mutex
	log bytes.Buffer
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

// Log returns what the process wrote to stderr so far.
func (p *proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// spawn starts watchqd on sock with umask (octal; "" to inherit) and
// extra flags; it does not wait for it. It is stopped when the test ends.
func spawn(tb testing.TB, sock, umask string, flags ...string) *proc {
	tb.Helper()
	aux := tb.TempDir()
	conf := filepath.Join(aux, "watchqd.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	ns := filepath.Join(aux, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
	if err != nil {
		tb.Fatal(err)
	}
	p := &proc{sock: sock, ready: make(chan struct{}), exited: make(chan struct{})}
	args := append([]string{"-socket", sock, "-config", conf, "-devices", "off", "-log-level", "debug"}, flags...)
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "NOTIFY_SOCKET" && k != "GORACE" && !strings.HasPrefix(k, "LISTEN_") && !strings.HasPrefix(k, "WATCHQD_TEST_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	// Under the race detector a process sleeps a second on exit
	// (atexit_sleep_ms) unless told not to.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	p.cmd.Env = append(p.cmd.Env, roleEnv+"=daemon", argsEnv+"="+strings.Join(args, "\x1f"), "NOTIFY_SOCKET="+ns, "GORACE="+gorace)
	if umask != "" {
		p.cmd.Env = append(p.cmd.Env, umaskEnv+"="+umask)
	}
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		notify.Close()
		tb.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				return
			}
			if bytes.Contains(buf[:n], []byte("READY=1")) {
				close(p.ready)
				return
			}
		}
	}()
	go func() {
		err := p.cmd.Wait()
		p.code = 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		notify.Close()
		close(p.exited)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if tb.Failed() {
			tb.Logf("watchqd %d log:\n%s", p.pid(), p.Log())
		}
	})
	return p
}

// start starts watchqd and waits for it to be ready.
func start(tb testing.TB, sock, umask string, flags ...string) *proc {
	tb.Helper()
	p := spawn(tb, sock, umask, flags...)
	p.waitReady(tb)
	return p
}

func (p *proc) waitReady(tb testing.TB) {
	tb.Helper()
	select {
	case <-p.ready:
	case <-p.exited:
		tb.Fatalf("watchqd %d exited with status %d before it was ready:\n%s", p.pid(), p.code, p.Log())
	case <-time.After(30 * time.Second):
		tb.Fatalf("watchqd %d not ready after 30s:\n%s", p.pid(), p.Log())
	}
}

// waitLog waits for want in what watchqd wrote to stderr. Its stderr
// reaches the log through a pipe and a goroutine: what it wrote before
// READY=1 may arrive after.
func (p *proc) waitLog(tb testing.TB, want string) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.Log(), want); {
		if time.Now().After(deadline) {
			tb.Fatalf("watchqd %d has not logged %q:\n%s", p.pid(), want, p.Log())
		}
		time.Sleep(time.Millisecond)
	}
}

// waitRefusal waits for watchqd to exit without having been ready, and
// checks its status is 1 and its stderr says want.
func (p *proc) waitRefusal(tb testing.TB, want string) {
	tb.Helper()
	select {
	case <-p.exited:
	case <-p.ready:
		tb.Fatalf("watchqd %d started (READY=1); want it to refuse with %q", p.pid(), want)
	case <-time.After(30 * time.Second):
		tb.Fatalf("watchqd %d still running after 30s; want it to refuse with %q", p.pid(), want)
	}
	select {
	case <-p.ready:
		tb.Fatalf("watchqd %d was ready before it exited; want it to refuse with %q", p.pid(), want)
	default:
	}
	if p.code != 1 || !strings.Contains(p.Log(), want) {
		tb.Fatalf("watchqd %d exited with status %d, stderr:\n%s\nwant status 1 and %q", p.pid(), p.code, p.Log(), want)
	}
}

// stop sends SIGTERM and checks watchqd exits with status 0.
func (p *proc) stop(tb testing.TB) {
	tb.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		tb.Fatalf("watchqd %d did not stop after SIGTERM", p.pid())
	}
	if p.code != 0 {
		tb.Fatalf("watchqd %d exited with status %d after SIGTERM:\n%s", p.pid(), p.code, p.Log())
	}
}

// kill sends SIGKILL and waits for the process to go.
func (p *proc) kill(tb testing.TB) {
	tb.Helper()
	p.cmd.Process.Kill()
	<-p.exited
}

// serves checks that a client can connect to sock and create a queue.
func serves(tb testing.TB, sock string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		tb.Fatalf("client on %s: %v", sock, err)
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, 8)
	if err != nil {
		tb.Fatalf("client on %s: %v", sock, err)
	}
	q.Close()
}

// inode returns path's device and inode numbers, failing if it is not a
// socket.
func inode(tb testing.TB, path string) [2]uint64 {
	tb.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		tb.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		tb.Fatalf("%s has mode %#o, not a socket", path, st.Mode)
	}
	return [2]uint64{st.Dev, st.Ino}
}

// entries lists dir's names.
func entries(tb testing.TB, dir string) []string {
	tb.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// testUser is an unprivileged user created with useradd for the test and
// removed with userdel when it ends.
type testUser struct {
	name     string
	uid, gid int
}

func newUser(tb testing.TB) *testUser {
	tb.Helper()
	testenv.RequireRoot(tb)
	testenv.RequireCommand(tb, "useradd")
	testenv.RequireCommand(tb, "userdel")
	name := fmt.Sprintf("wqsock%d", os.Getpid()%100000)
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		tb.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			tb.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	id := func(flag string) int {
		out, err := exec.Command("id", flag, name).Output()
		if err != nil {
			tb.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			tb.Fatal(err)
		}
		return n
	}
	return &testUser{name: name, uid: id("-u"), gid: id("-g")}
}
