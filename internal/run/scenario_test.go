//go:build linux && amd64

package run_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The scripted key scenario the kernel's sample program and `keyctl
// watch @s` are run under, natively in the guest and under watchq run on
// the host; their outputs must match line for line once key ids are named.
//
// A driver process (this test binary with scenarioEnv set, started inside
// `keyctl session -` as scenarioUID, so that @s and @u are the scenario's
// alone) starts the watcher, waits until it blocks reading its queue,
// then runs each step with keyctl(1) and waits until the watcher blocks
// again: every step's records are read and printed before the next step,
// so reads never merge steps. Under watchq run, a "sync" on the
// supervisor's --sync-socket after each step makes the key source post
// the step's records and hands them to the blocked reader before the
// driver looks.

const (
	scenarioEnv = "WATCHQ_RUN_TEST_SCENARIO"
	// scenarioUser owns the scenario's user keyring; nothing else on the
	// machine uses it. useradd makes it where it exists (fusermount3
	// wants a user name); the vmtest guest has no passwd database, and
	// there the bare uid scenarioUID serves.
	scenarioUser = "wq-run"
	scenarioUID  = 61234
)

// scenarioCred returns the scenario user's uid and gid.
func scenarioCred(t *testing.T) (uint32, uint32) {
	t.Helper()
	look := func() (uint32, uint32, bool) {
		u, err := user.Lookup(scenarioUser)
		if err != nil {
			return 0, 0, false
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return uint32(uid), uint32(gid), true
	}
	if uid, gid, ok := look(); ok {
		return uid, gid
	}
	p, err := exec.LookPath("useradd")
	if err != nil {
		return scenarioUID, scenarioUID
	}
	if out, err := exec.Command(p, "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", scenarioUser).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", scenarioUser, err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", scenarioUser).Run() })
	uid, gid, ok := look()
	if !ok {
		t.Fatalf("useradd made no %s", scenarioUser)
	}
	return uid, gid
}

// scenarioStep is one keyctl(1) command; %NAME is replaced by the serial
// of the key named NAME, and a step with a name records its output (the
// new key's serial) under it.
type scenarioStep struct {
	args []string
	name string
}

// scenario: add, update, link, unlink, clear, revoke, invalidate,
// setperm. The watchers watch @s (both) and @u (the sample); steps on
// other keys post nothing to them, on the kernel as under watchq run.
var scenario = []scenarioStep{
	{[]string{"add", "user", "k1", "v1", "@s"}, "k1"},
	{[]string{"update", "%k1", "v2"}, ""},
	{[]string{"newring", "r1", "@s"}, "r1"},
	{[]string{"link", "%k1", "%r1"}, ""},
	{[]string{"add", "user", "k2", "v2", "@u"}, "k2"},
	{[]string{"unlink", "%k1", "@s"}, ""},
	{[]string{"add", "user", "k3", "v3", "@s"}, "k3"},
	{[]string{"setperm", "@s", "0x3f3f0000"}, ""},
	{[]string{"invalidate", "%k1"}, ""},
	{[]string{"unlink", "%k2", "@u"}, ""},
	{[]string{"clear", "@s"}, ""},
	{[]string{"revoke", "@s"}, ""},
}

// watcher kinds: how the program blocks and is stopped.
var watcherKinds = map[string]struct {
	blockNr int // the syscall it waits in
	pty     bool
	stop    syscall.Signal
}{
	// The sample uses stdio's default buffering: through a pty its
	// output is line-buffered, so every line is there when it blocks.
	"watch_test": {unix.SYS_READ, true, syscall.SIGKILL},
	// keyctl watch polls, line-buffers itself and ends cleanly on
	// SIGTERM ("Monitoring terminated").
	"keyctl": {unix.SYS_POLL, false, syscall.SIGTERM},
}

// scenarioMain is the driver: args are KIND SYNC_SOCKET|- WATCHER ARGV...
// It prints "name SERIAL NAME" lines, "---", then the watcher's output.
func scenarioMain(args []string) int {
	if err := driveScenario(os.Stdout, args); err != nil {
		fmt.Fprintln(os.Stderr, "scenario:", err)
		return 1
	}
	return 0
}

func driveScenario(out io.Writer, args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("want KIND SYNC WATCHER...")
	}
	kind, ok := watcherKinds[args[0]]
	if !ok {
		return fmt.Errorf("unknown watcher kind %q", args[0])
	}
	syncSock := args[1]
	names := map[string]string{}
	for _, k := range []struct {
		name string
		id   int
	}{{"S", unix.KEY_SPEC_SESSION_KEYRING}, {"U", unix.KEY_SPEC_USER_KEYRING}} {
		id, err := unix.KeyctlGetKeyringID(k.id, true)
		if err != nil {
			return fmt.Errorf("keyring id of %s: %w", k.name, err)
		}
		names[k.name] = strconv.Itoa(id)
	}

	cmd := exec.Command(args[2], args[3:]...)
	cmd.Env = append(withoutVar(os.Environ(), scenarioEnv), cliEnv+"=1")
	cmd.WaitDelay = 10 * time.Second
	cmd.Stderr = os.Stderr
	var output bytes.Buffer
	copied := make(chan error, 1)
	if kind.pty {
		ptm, pts, err := openPty()
		if err != nil {
			return err
		}
		cmd.Stdout = pts
		if err := cmd.Start(); err != nil {
			return err
		}
		pts.Close()
		go func() {
			_, err := io.Copy(&output, ptm)
			ptm.Close()
			copied <- err
		}()
	} else {
		cmd.Stdout = &output
		if err := cmd.Start(); err != nil {
			return err
		}
		close(copied)
	}
	defer cmd.Process.Kill() // on an error, nothing is left behind
	pid := cmd.Process.Pid
	if syncSock != "-" {
		// cmd is the supervisor; the watcher is its child running the
		// program after "--" (other children, such as fusermount3, come
		// and go).
		i := slices.Index(args, "--")
		if i < 0 || i+1 >= len(args) {
			return fmt.Errorf("no -- PROG in %q", args)
		}
		prog, err := exec.LookPath(args[i+1])
		if err != nil {
			return err
		}
		if pid, err = childPid(pid, prog); err != nil {
			return err
		}
	}
	if err := waitBlocked(pid, kind.blockNr); err != nil {
		return fmt.Errorf("watcher never blocked: %w", err)
	}
	for i, st := range scenario {
		a := make([]string, len(st.args))
		for j, s := range st.args {
			if n, ok := strings.CutPrefix(s, "%"); ok {
				s = names[n]
			}
			a[j] = s
		}
		res, err := exec.Command("keyctl", a...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("step %d keyctl %s: %v: %s", i+1, strings.Join(a, " "), err, res)
		}
		if st.name != "" {
			names[st.name] = strings.TrimSpace(string(res))
		}
		if syncSock != "-" {
			if err := syncSupervisor(syncSock); err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
		}
		if err := waitBlocked(pid, kind.blockNr); err != nil {
			return fmt.Errorf("step %d: %w", i+1, err)
		}
	}
	syscall.Kill(pid, kind.stop)
	werr := cmd.Wait()
	if err := <-copied; err != nil && !strings.Contains(err.Error(), "input/output error") {
		return err // a pty's master reads EIO once the slave side is gone
	}
	var ee *exec.ExitError
	if werr != nil && !(kind.stop == syscall.SIGKILL && errorsAs(werr, &ee)) {
		return fmt.Errorf("watcher: %v", werr)
	}
	keys := make([]string, 0, len(names))
	for n := range names {
		keys = append(keys, n)
	}
	slices.Sort(keys)
	for _, n := range keys {
		fmt.Fprintf(out, "name %s %s\n", names[n], n)
	}
	fmt.Fprintln(out, "---")
	out.Write(bytes.ReplaceAll(output.Bytes(), []byte("\r\n"), []byte("\n")))
	return nil
}

func errorsAs(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

func withoutVar(env []string, name string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, name+"=") })
}

// openPty opens a pseudo-terminal pair.
func openPty() (ptm, pts *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	ptm = os.NewFile(uintptr(fd), "/dev/ptmx")
	var unlock int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		ptm.Close()
		return nil, nil, e
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		return nil, nil, err
	}
	pts, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		return nil, nil, err
	}
	return ptm, pts, nil
}

// childPid finds the child of pid that runs the program prog.
func childPid(pid int, prog string) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			c, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			if exe, _ := os.Readlink("/proc/" + e.Name() + "/exe"); len(f) > 1 && f[1] == strconv.Itoa(pid) && exe == prog {
				return c, nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("pid %d has no child running %s", pid, prog)
}

// waitBlocked waits until process pid sleeps in system call nr. A step's
// records wake the watcher before the step's keyctl returns (the kernel
// wakes readers while posting; under watchq run, the sync hands them over
// before it answers), so once it sleeps in that call again it has read and
// printed them.
func waitBlocked(pid, nr int) error {
	want := strconv.Itoa(nr) + " "
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return err
		}
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		sc, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/syscall")
		if len(f) > 0 && f[0] == "S" && strings.HasPrefix(string(sc), want) {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("pid %d did not block in syscall %d", pid, nr)
}

// syncSupervisor asks watchq run to post every key change made so far.
func syncSupervisor(path string) error {
	c, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintln(c, "sync"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "ok" {
		return fmt.Errorf("sync: %s", strings.TrimSpace(line))
	}
	return nil
}
