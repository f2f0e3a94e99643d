package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/internal/testenv"
)

// startInNS starts watchq in a private mount namespace of its own (the
// child unshares CLONE_NEWNS and makes / private before exec).
func startInNS(t *testing.T, args ...string) *proc {
	t.Helper()
	testenv.RequireRoot(t)
	cmd := exec.Command(watchqBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	return startCmd(t, cmd)
}

// inNS runs f on a thread that has joined pid's mount namespace; the
// thread is thrown away afterwards.
func inNS(t *testing.T, pid int, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- err
			return
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestWatchMountsJSON: in a private mount namespace, "watchq watch mounts
// --json /" reports a tmpfs mount and its unmount as new_mount and unmount
// records, in order, with the mount points resolved, then exits at
// --count 2.
func TestWatchMountsJSON(t *testing.T) {
	dir := t.TempDir()
	p := startInNS(t, "watch", "mounts", "--format", "json", "--count", "2", "/")
	stderr := strings.Join(p.waitReady(), "\n")
	if !strings.Contains(stderr, "watchq: mounts: in-process (fanotify backend") && !strings.Contains(stderr, "watchq: mounts: in-process (mountinfo backend") {
		t.Errorf("stderr does not say which backend runs:\n%s", stderr)
	}
	if !strings.Contains(stderr, "watchq: watching mounts / tag 2") {
		t.Errorf("watching line missing:\n%s", stderr)
	}
	// One step at a time, each once watchq has printed the last: a mount
	// gone before the source reads its attach event cannot be placed
	// (docs/mounts.md).
	pid := p.cmd.Process.Pid
	inNS(t, pid, func() error { return unix.Mount("tmpfs", dir, "tmpfs", 0, "") })
	p.waitFor("the new_mount record", 30*time.Second, func(out, _ []string) bool { return len(out) >= 1 })
	inNS(t, pid, func() error { return unix.Unmount(dir, 0) })
	p.waitFor("two records", 30*time.Second, func(out, _ []string) bool { return len(out) >= 2 })
	<-p.done
	if p.err != nil {
		t.Fatalf("watchq: %v", p.err)
	}
	evs := checkMountPair(t, p, dir)
	if evs[0]["aux_mount_id"] != evs[1]["aux_mount_id"] || evs[0]["mount_id"] != evs[1]["mount_id"] {
		t.Errorf("new_mount and unmount name different mounts: %v, %v", evs[0], evs[1])
	}
}

// TestWatchFS: "watchq watch fs DIR" on a tmpfs in a private namespace
// reports its remount read-only and back as SUPER readonly lines, then the
// watch's removal when the tmpfs is unmounted.
func TestWatchFS(t *testing.T) {
	testenv.RequireRoot(t)
	mountCmd := testenv.RequireCommand(t, "mount")
	dir := t.TempDir()
	// The tmpfs must exist before watchq starts: mount it in the child's
	// namespace from a shell that then execs watchq.
	sh := fmt.Sprintf("%s -t tmpfs none %s && exec %s watch fs --count 3 %s", mountCmd, dir, watchqBin, dir)
	cmd := exec.Command("/bin/sh", "-c", sh)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	p := startCmd(t, cmd)
	p.waitReady()
	// One step at a time, each once watchq has printed the last: a
	// remount is seen by rereading mountinfo, which finds nothing to say of
	// a filesystem unmounted meanwhile (docs/mounts.md).
	pid := p.cmd.Process.Pid
	records := func(n int) func(out, _ []string) bool {
		return func(out, _ []string) bool {
			k := 0
			for _, l := range out {
				if strings.HasPrefix(l, "SUPER ") || strings.HasPrefix(l, "REMOVAL ") {
					k++
				}
			}
			return k >= n
		}
	}
	inNS(t, pid, func() error { return unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, "") })
	p.waitFor("SUPER readonly (ro)", 30*time.Second, records(1))
	inNS(t, pid, func() error { return unix.Mount("", dir, "", unix.MS_REMOUNT, "") })
	p.waitFor("SUPER readonly (rw)", 30*time.Second, records(2))
	inNS(t, pid, func() error { return unix.Unmount(dir, unix.MNT_DETACH) })
	p.waitFor("the removal", 30*time.Second, records(3))
	var got []string
	for _, l := range p.lines() {
		if strings.HasPrefix(l, "SUPER ") || strings.HasPrefix(l, "REMOVAL ") {
			got = append(got, l[strings.Index(l, " ")+1:])
		}
	}
	want := []string{"change=0[readonly] (ro)", "change=0[readonly] (rw)", "of watchpoint 00000003"}
	if len(got) != 3 || !strings.HasSuffix(got[0], want[0]) || !strings.HasSuffix(got[1], want[1]) || got[2] != want[2] {
		t.Errorf("got %q, want SUPER … %q, then REMOVAL %q", got, want[:2], want[2])
	}
}

// checkMountPair checks that p printed, in JSON, exactly a new-mount and
// then an unmount record of the mount at point, each with tag 2, and
// returns the two.
func checkMountPair(t *testing.T, p *proc, point string) []map[string]any {
	t.Helper()
	evs := checkJSONLines(t, p.out())
	if len(evs) != 2 {
		t.Fatalf("%d records, want 2:\n%s", len(evs), p.out())
	}
	for i, want := range []string{"new-mount", "unmount"} {
		e := evs[i]
		if e["type"] != "mount" || e["event"] != want || e["aux_mount_point"] != point || e["tag"] != float64(2) {
			t.Errorf("record %d: %v, want a %s of %s with tag 2", i, e, want, point)
		}
	}
	return evs
}
