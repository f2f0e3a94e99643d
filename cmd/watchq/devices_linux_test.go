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

	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
)

// attachDetach attaches a 1 MiB file of zeros to a free loop device and
// detaches it, waiting each time for p's BLOCK lifecycle line for the
// device: a change to 0x800 sectors, then to 0. It returns the two lines.
func attachDetach(t *testing.T, p *proc) (attached, detached string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	loop := devtest.AttachLoop(t, file, 0)
	prefix := fmt.Sprintf("BLOCK %08x e=130[change] s=", loop.Dev)
	attached = prefix + "800 " + loop.Name
	p.waitFor("the attach line "+attached, 20*time.Second, func(out, _ []string) bool { return findLine(out, attached, "") != "" })
	loop.Detach(t)
	detached = prefix + "0 " + loop.Name
	p.waitFor("the detach line "+detached, 20*time.Second, func(out, _ []string) bool { return findLine(out, detached, "") != "" })
	return attached, detached
}

// findLine returns the first line with the prefix and suffix, or "".
func findLine(lines []string, prefix, suffix string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) && strings.HasSuffix(l, suffix) {
			return l
		}
	}
	return ""
}

// TestWatchDevicesInProcess runs "watchq watch devices" with no daemon, so
// the in-process device source is used (root), attaches a 1 MiB file to a
// loop device and detaches it, and checks the BLOCK lifecycle lines: a
// change to 0x800 sectors, then to 0. Other tests' loop devices may show
// up too; only this device's lines are checked. SIGINT ends the watch
// cleanly.
func TestWatchDevicesInProcess(t *testing.T) {
	testenv.RequireRoot(t)
	p := start(t, "watch", "devices", "--socket", filepath.Join(t.TempDir(), "none.sock"), "--filter", "block:lifecycle")
	stderr := strings.Join(p.waitReady(), "\n")
	if !strings.Contains(stderr, "watchq: devices: in-process (uevents;") || !strings.Contains(stderr, "none.sock: not running (no such file or directory; start it: systemctl start watchqd.socket)") {
		t.Fatalf("stderr does not say the in-process source is used and why:\n%s", stderr)
	}
	if !strings.Contains(stderr, "watchq: watching devices tag 4; queue 256 notes, filter block:lifecycle") {
		t.Errorf("watching line missing:\n%s", stderr)
	}

	attached, detached := attachDetach(t, p)

	// Each BLOCK line follows its NOTIFY line with tag 4 and the
	// lifecycle subtype, and some read() line before it.
	out := p.lines()
	for i, l := range out {
		if l == attached || l == detached {
			if i < 2 || !strings.HasPrefix(out[i-1], "NOTIFY[") || !strings.Contains(out[i-1], "ty=000002 sy=82 i=0000041") {
				t.Errorf("line %q follows %q", l, out[max(i-1, 0)])
			}
		}
	}
	if !strings.HasPrefix(out[0], "read() = ") {
		t.Errorf("first line %q, want read() = N", out[0])
	}

	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Errorf("exit status %d after SIGINT", code)
	}
}

// TestWatchDevicesUnprivileged: "watch devices" as nobody without a
// daemon gets device lifecycle from uevents (the uevent socket needs no
// privilege), says that block errors need watchqd or root and why the
// daemon is not used, and prints a loop device's attach and detach.
func TestWatchDevicesUnprivileged(t *testing.T) {
	testenv.RequireRoot(t) // to run watchq as nobody and attach the loop device
	cmd := exec.Command(watchqBin, "watch", "devices", "--socket", "/nonexistent/watchqd.sock", "--filter", "block:lifecycle")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	p := startCmd(t, cmd)
	stderr := p.waitReady()
	want := []string{
		"watchq: devices: in-process, uevents only (device lifecycle); block I/O errors and USB resets need watchqd or root; " +
			"watchqd at /nonexistent/watchqd.sock: not running (no such file or directory; start it: systemctl start watchqd.socket)",
		"watchq: watching devices tag 4; queue 256 notes, filter block:lifecycle",
	}
	if strings.Join(stderr, "\n") != strings.Join(want, "\n") {
		t.Errorf("stderr\n%s\nwant\n%s", strings.Join(stderr, "\n"), strings.Join(want, "\n"))
	}
	attachDetach(t, p)
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(); code != 0 {
		t.Errorf("exit status %d after SIGINT", code)
	}
}
