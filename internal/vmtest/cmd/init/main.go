//go:build linux

// Command init is PID 1 of the vmtest guest. The runner builds it static
// (CGO_ENABLED=0) and packs it as /init into the initramfs. It mounts the
// usual filesystems, runs every test binary listed in /watchq/manifest.json
// with its output on the console, prints the result line
// "WATCHQ-VMTEST-RESULT: PASS|FAIL n" and powers the machine off, which makes
// qemu exit.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/internal/vmtest/internal/proto"
)

// guestPATH is the PATH of every test; /watchq/bin holds runner-added tools.
const guestPATH = "/watchq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type mount struct {
	src, target, fstype string
	flags               uintptr
	data                string
	optional            bool // missing kernel support is not fatal
}

var mounts = []mount{
	// The kernel does not mount devtmpfs on an initramfs root even with
	// CONFIG_DEVTMPFS_MOUNT, so init does it.
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", false},
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", false},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "", true},
	{"tracefs", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"debugfs", "/sys/kernel/debug", "debugfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"bpf", "/sys/fs/bpf", "bpf", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0700", true},
}

func main() {
	err := run()
	if err != nil {
		fmt.Printf("vmtest init: %v\n", err)
		fmt.Printf("%s FAIL init\n", proto.ResultMarker)
	}
	unix.Sync()
	// With ACPI, power-off makes qemu exit with status 0; the host takes the
	// verdict from the result line, not from qemu's status.
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Unreachable unless reboot failed; exiting PID 1 panics the kernel, and
	// panic=-1 with qemu -no-reboot ends the VM too.
	os.Exit(1)
}

// timeoutMargin is kept from the hard timeout for boot and output.
const timeoutMargin = 20 * time.Second

// hasTimeoutFlag reports whether the user passed -test.timeout already.
func hasTimeoutFlag(args []string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, "-test.timeout") {
			return true
		}
	}
	return false
}

func run() error {
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil && !m.optional {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil && !m.optional {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	for _, d := range []string{"/root", "/var/tmp"} {
		os.MkdirAll(d, 0o755)
	}
	os.Symlink("/proc/self/fd", "/dev/fd")
	unix.Sethostname([]byte("vmtest"))

	b, err := os.ReadFile(proto.ManifestPath)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	var man proto.Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return fmt.Errorf("parse manifest: %w", err)
	}
	env := []string{
		"PATH=" + guestPATH, "HOME=/root", "TMPDIR=/tmp", "TERM=dumb",
		proto.EnvInVM + "=1",
	}
	env = append(env, man.Env...)

	var uname unix.Utsname
	unix.Uname(&uname)
	fmt.Printf("vmtest init: kernel %s, %d test binaries\n", unix.ByteSliceToString(uname.Release[:]), len(man.Tests))

	// The host's clock started before boot; keep a margin for boot and for
	// the dump of a timed-out test to reach the console.
	deadline := time.Now().Add(time.Duration(man.TimeoutSeconds)*time.Second - timeoutMargin)
	failed := 0
	for _, t := range man.Tests {
		fmt.Printf("=== vmtest: RUN %s\n", t.Pkg)
		start := time.Now()
		args := t.Args
		if man.TimeoutSeconds > 0 && !hasTimeoutFlag(args) {
			left := max(time.Until(deadline), 10*time.Second)
			args = append([]string{"-test.timeout=" + left.Round(time.Second).String()}, args...)
		}
		cmd := exec.Command(t.Bin, args...)
		cmd.Dir = t.Dir
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		verdict := "ok"
		if err != nil {
			verdict = "FAIL"
			failed++
		}
		fmt.Printf("=== vmtest: %s %s (%.2fs)", verdict, t.Pkg, time.Since(start).Seconds())
		if err != nil {
			fmt.Printf(": %v", err)
		}
		fmt.Println()
	}
	if failed > 0 {
		fmt.Printf("%s FAIL %d\n", proto.ResultMarker, failed)
	} else {
		fmt.Printf("%s PASS\n", proto.ResultMarker)
	}
	return nil
}
