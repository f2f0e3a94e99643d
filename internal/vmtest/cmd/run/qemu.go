package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/watchq/watchq/internal/vmtest/internal/proto"
)

// qemuBinary is the emulator; Debian ships it in qemu-system-x86.
const qemuBinary = "qemu-system-x86_64"

// chooseAccel resolves -accel auto: KVM only where it really works. On the
// project's VMs /dev/kvm is kvm_pvm (a nested software hypervisor, module
// kvm_pvm, no vmx/svm CPU flag) that cannot run a stock kernel: "-cpu host"
// aborts on MSR 0x10a and the default CPU dies with "KVM internal error …
// emulation failure". There TCG is the only choice.
func chooseAccel(want string) (accel, why string, err error) {
	switch want {
	case "tcg":
		return "tcg", "requested", nil
	case "kvm":
		if ok, why := kvmUsable(); !ok {
			return "", "", fmt.Errorf("-accel kvm: %s", why)
		}
		return "kvm", "requested", nil
	case "auto", "":
		if ok, why := kvmUsable(); !ok {
			return "tcg", why, nil
		}
		return "kvm", "/dev/kvm usable", nil
	}
	return "", "", fmt.Errorf("-accel %q: want auto, kvm or tcg", want)
}

func kvmUsable() (bool, string) {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return false, "/dev/kvm is kvm_pvm, which cannot run a stock kernel"
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Sprintf("no usable /dev/kvm (%v)", err)
	}
	f.Close()
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false, fmt.Sprintf("cannot read /proc/cpuinfo: %v", err)
	}
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		if strings.HasPrefix(line, "flags") {
			for _, fl := range strings.Fields(line) {
				if fl == "vmx" || fl == "svm" {
					return true, ""
				}
			}
			break
		}
	}
	return false, "CPU has no vmx/svm flag (no hardware virtualisation)"
}

// vmConfig describes one guest run.
type vmConfig struct {
	kernel, initrd string
	accel          string
	memMB, cpus    int
	qmpSock        string
	ctlSock        string
	extraArgs      []string
	cmdline        string
}

func (c vmConfig) args() []string {
	a := []string{
		"-nodefaults", "-display", "none", "-no-reboot",
		"-m", fmt.Sprint(c.memMB), "-smp", fmt.Sprint(c.cpus),
		"-accel", c.accel,
		"-kernel", c.kernel, "-initrd", c.initrd,
		// quiet keeps kernel lines off the console; panic=-1 with
		// -no-reboot makes a guest panic end qemu at once.
		// no_timer_check: under a loaded TCG host the IO-APIC timer check
		// can misfire ("MP-BIOS bug: 8254 timer not connected").
		"-append", strings.TrimSpace("console=ttyS0 quiet panic=-1 no_timer_check " + c.cmdline),
		"-serial", "stdio",
		"-qmp", "unix:" + c.qmpSock + ",server=on,wait=off",
		"-device", "virtio-serial-pci,id=vser",
		"-chardev", "socket,id=ctl,path=" + c.ctlSock,
		"-device", "virtserialport,bus=vser.0,chardev=ctl,name=" + proto.PortName,
		"-device", "qemu-xhci,id=xhci",
	}
	if c.accel == "kvm" {
		a = append(a, "-cpu", "host")
	}
	return append(a, c.extraArgs...)
}

// guestResult is what the console told us.
type guestResult struct {
	verdict   string        // "PASS", "FAIL …", or "" when no result line came
	bootTime  time.Duration // qemu start → first line from /init
	guestTime time.Duration // qemu start → result line
	failed    []string      // packages /init reported as failed
}

// runQEMU starts qemu, copies the guest console to out line by line, and
// returns when qemu exits or ctx ends (then it kills qemu). started is called
// once qemu runs, so QMP can connect.
func runQEMU(ctx context.Context, c vmConfig, out io.Writer, started func()) (guestResult, error) {
	var res guestResult
	cmd := exec.Command(qemuBinary, c.args()...)
	cmd.Stdin = nil // /dev/null: -serial stdio must not grab a terminal
	cmd.Stderr = os.Stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start %s: %w", qemuBinary, err)
	}
	started()
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintln(out, line)
			if res.bootTime == 0 && strings.HasPrefix(line, "vmtest init:") {
				res.bootTime = time.Since(start)
			}
			if v, ok := strings.CutPrefix(line, "=== vmtest: FAIL "); ok {
				res.failed = append(res.failed, strings.Fields(v)[0])
			}
			if v, ok := strings.CutPrefix(line, proto.ResultMarker); ok {
				res.verdict = strings.TrimSpace(v)
				res.guestTime = time.Since(start)
			}
		}
	}()
	waitErr := make(chan error, 1)
	go func() {
		<-lines // drain the console before Wait closes the pipe
		waitErr <- cmd.Wait()
	}()
	select {
	case err := <-waitErr:
		if err != nil {
			return res, fmt.Errorf("%s: %w", qemuBinary, err)
		}
		return res, nil
	case <-ctx.Done():
		cmd.Process.Kill()
		<-waitErr
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return res, fmt.Errorf("hard timeout: the guest did not finish in time; killed qemu")
		}
		return res, ctx.Err()
	}
}
