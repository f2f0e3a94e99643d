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
	if !strings.Contains(stderr, "watchq: devices: in-process (uevents;") || !strings.Contains(stderr, "none.sock: not running (no such file or directory)") {
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

// TestWatchDevicesUnavailable checks that "watch devices" without a daemon
// and without root fails and says why; as root it runs watchq as nobody.
// "watch" without a subcommand goes on without devices and says why.
func TestWatchDevicesUnavailable(t *testing.T) {
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	cmd := exec.Command(watchqBin, "watch", "devices", "--socket", "/nonexistent/watchqd.sock")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || string(out) != "watchq: watchqd at /nonexistent/watchqd.sock: not running (no such file or directory); in-process device source needs root\n" {
		t.Errorf("watch devices: %v, output %q", err, out)
	}

	cmd = exec.Command(watchqBin, "watch", "--socket", "/nonexistent/watchqd.sock", "--backend=poll", "--timeout=200ms")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "watchq: devices: unavailable: watchqd at /nonexistent/watchqd.sock: not running (no such file or directory); in-process device source needs root\n") {
		t.Errorf("watch: %v, output %q", err, out)
	}
}
