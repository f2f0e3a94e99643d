//go:build linux && amd64 && !vmtest

package run_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// startBlocked starts `watchq run -- robust block` and returns the command
// (supervisor), PROG's pid and a reader of the rest of PROG's output.
func startBlocked(t *testing.T, ctx context.Context) (*exec.Cmd, int, *bufio.Reader) {
	t.Helper()
	robust := buildC(t, "robust")
	cmd := inSession(t, watchq(ctx, "run", "--always", "--", robust, "block"))
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	t.Cleanup(func() { pr.Close() })
	br := bufio.NewReader(pr)
	line, err := br.ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 || f[0] != "ready" {
		t.Fatalf("robust block said %q, %v", line, err)
	}
	pid, _ := strconv.Atoi(f[1])
	return cmd, pid, br
}

// TestProgKilled: PROG killed in a blocked read, with a queue open: the
// supervisor ends at once, by PROG's signal.
func TestProgKilled(t *testing.T) {
	requireShim(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, pid, _ := startBlocked(t, ctx)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("supervisor of a killed PROG ended with %v, want signal: killed", err)
	}
}

// TestSupervisorKilled: with the supervisor gone, PROG's blocked read
// fails and its next pipe2 fails with ENOSYS; nothing hangs.
func TestSupervisorKilled(t *testing.T) {
	requireShim(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, pid, br := startBlocked(t, ctx)
	// keyctl session executes the supervisor: same process.
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br) // until PROG, now an orphan, exits
	if err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	out := string(rest)
	if !strings.Contains(out, "read = -1 (Software caused connection abort)") && !strings.Contains(out, "read = -1 (Transport endpoint is not connected)") {
		t.Errorf("PROG %d's blocked read after the supervisor died: %q, want ECONNABORTED or ENOTCONN", pid, out)
	}
	if !strings.Contains(out, "pipe2 = -1 (Function not implemented)") {
		t.Errorf("PROG's pipe2 after the supervisor died: %q, want ENOSYS", out)
	}
}

// TestExitWithOpenQueues: PROG exits with watched queues open; the
// supervisor ends as soon as their files are released.
func TestExitWithOpenQueues(t *testing.T) {
	requireShim(t)
	robust := buildC(t, "robust")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", robust, "exit", "200")))
	if res.err != nil || !strings.Contains(res.stdout, "ok 200 queues open") {
		t.Fatalf("%v\n%s%s", res.err, res.stdout, res.stderr)
	}
}

// TestManyCalls: thousands of trapped calls, every kind, leave no fd
// behind in PROG (and the supervisor keeps up).
func TestManyCalls(t *testing.T) {
	requireShim(t)
	robust := buildC(t, "robust")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", robust, "many", "3000")))
	if res.err != nil || !strings.Contains(res.stdout, "ok 3000 rounds") {
		t.Fatalf("%v\n%s%s", res.err, res.stdout, res.stderr)
	}
	t.Logf("%s in %v", strings.TrimSpace(res.stdout), time.Since(start))
}

// TestPassFdWithinTree: a queue passed over a socketpair between two of
// PROG's processes works in the receiver (its ioctl, watch and read).
func TestPassFdWithinTree(t *testing.T) {
	requireShim(t)
	robust := buildC(t, "robust")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", robust, "passfd")))
	if res.err != nil || !strings.Contains(res.stdout, "ok passed") {
		t.Fatalf("%v\n%s%s", res.err, res.stdout, res.stderr)
	}
}

// TestPassFdOutside: a queue's read end sent to a process outside PROG's
// tree (this test) reads, polls and takes the ioctls there, through the
// FUSE file itself; the supervisor stays until that process closes it.
func TestPassFdOutside(t *testing.T) {
	requireShim(t)
	robust := buildC(t, "robust")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs := os.NewFile(uintptr(sp[1]), "robust-sock")
	defer unix.Close(sp[0])
	cmd := inSession(t, watchq(ctx, "run", "--always", "--", robust, "sendfd"))
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sp[0], buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	fds, _ := unix.ParseUnixRights(&msgs[0])
	fd := fds[0]

	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 10000); n != 1 || pfd[0].Revents != unix.POLLIN {
		t.Errorf("poll of the received queue: %d %v revents %#x, want POLLIN", n, err, pfd[0].Revents)
	}
	if err := unix.IoctlSetInt(fd, kernel.IocWatchQueueSetSize, 8); !errors.Is(err, unix.EBUSY) {
		t.Errorf("SET_SIZE on the received queue (through FUSE): %v, want EBUSY", err)
	}
	f := record.TypeFilter(record.TypeKey)
	fb, _ := f.MarshalBinary()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kernel.IocWatchQueueSetFilter, uintptr(unsafePointer(fb))); e != 0 {
		t.Errorf("SET_FILTER on the received queue (through FUSE): %v", e)
	}
	b := make([]byte, 256)
	n, err := unix.Read(fd, b)
	if err != nil || n != 16 || record.Record(b[:n]).Tag() != 3 {
		t.Errorf("read of the received queue: %d %v % x, want the 16-byte record tagged 3", n, err, b[:max(n, 0)])
	}
	unix.Write(sp[0], []byte("done"))
	// PROG exits now; the supervisor must wait for this process's fd.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("watchq run ended (%v) while a queue was still open outside", err)
	case <-time.After(300 * time.Millisecond):
	}
	unix.Close(fd)
	if err := <-exited; err != nil {
		t.Fatalf("watchq run after the last queue closed: %v", err)
	}
}

// TestTracedRefused: a thread watchq run cannot enter with ptrace (here it
// is traced already) gets EPERM for a key watch, and standard error says
// why: its key id is never resolved anywhere but in its own context.
func TestTracedRefused(t *testing.T) {
	requireShim(t)
	robust := buildC(t, "robust")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", robust, "traced")))
	if res.err != nil || !strings.Contains(res.stdout, "ok refused") {
		t.Fatalf("%v\n%s%s", res.err, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stderr, "refused (EPERM)") || !strings.Contains(res.stderr, "ptrace") {
		t.Errorf("standard error does not say why: %q", res.stderr)
	}
}

// TestOrphan: a descendant that outlives PROG and its own parent keeps its
// queue, and its key ids are still resolved in its context: the
// supervisor, a child subreaper, has it as a child (Yama's ptrace_scope 1
// would refuse a non-descendant) and reaps it.
func TestOrphan(t *testing.T) {
	requireShim(t)
	robust := buildC(t, "robust")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", robust, "orphan")))
	if res.err != nil || !strings.Contains(res.stdout, "orphan ok") {
		t.Fatalf("%v\n%s%s", res.err, res.stdout, res.stderr)
	}
}
