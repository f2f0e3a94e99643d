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

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
)

// loopAttach attaches file to a free loop device with losetup(8) and
// returns the device path; the device is detached when the test ends.
func loopAttach(t *testing.T, file string) string {
	t.Helper()
	losetup := testenv.RequireCommand(t, "losetup")
	out, err := exec.Command(losetup, "-f", "--show", file).CombinedOutput()
	if err != nil {
		testenv.Skip(t, "losetup -f --show: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { loopDetach(t, dev) })
	return dev
}

func loopDetach(t *testing.T, dev string) {
	out, err := exec.Command("losetup", "-d", dev).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such device") {
		t.Logf("losetup -d %s: %v: %s", dev, err, out)
	}
}

// blockDev returns the kernel-internal dev_t of a block device node, as
// block records carry it.
func blockDev(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return watchq.KernelDev(unix.Major(st.Rdev), unix.Minor(st.Rdev))
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
	testenv.RequireCommand(t, "losetup")
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "watch", "devices", "--socket", filepath.Join(t.TempDir(), "none.sock"), "--filter", "block:lifecycle")
	stderr := strings.Join(p.waitReady(), "\n")
	if !strings.Contains(stderr, "watchq: devices: in-process (uevents;") || !strings.Contains(stderr, "none.sock: not running (no such file or directory)") {
		t.Fatalf("stderr does not say the in-process source is used and why:\n%s", stderr)
	}
	if !strings.Contains(stderr, "watchq: watching devices tag 4; queue 256 notes, filter block:lifecycle") {
		t.Errorf("watching line missing:\n%s", stderr)
	}

	dev := loopAttach(t, file)
	name := filepath.Base(dev)
	prefix := fmt.Sprintf("BLOCK %08x e=130[change] s=", blockDev(t, dev))
	attached := prefix + "800 " + name
	p.waitFor("the attach line "+attached, 20*time.Second, func(out, _ []string) bool { return findLine(out, attached, "") != "" })

	loopDetach(t, dev)
	detached := prefix + "0 " + name
	p.waitFor("the detach line "+detached, 20*time.Second, func(out, _ []string) bool { return findLine(out, detached, "") != "" })

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
