//go:build vmtest

package vmtest_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/internal/vmtest/guest"
)

// TestTracefsBlockRqError: the guest has tracefs (mounted by /init at
// /sys/kernel/tracing) with the block:block_rq_error tracepoint.
func TestTracefsBlockRqError(t *testing.T) {
	for _, p := range []string{
		"/sys/kernel/tracing/events/block/block_rq_error/id",
		"/sys/kernel/tracing/available_filter_functions",
	} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%v (CONFIG_FTRACE/TRACING, tracefs mount)", err)
		}
	}
}

// usbdevfsReset is USBDEVFS_RESET = _IO('U', 20) (include/uapi/linux/
// usbdevice_fs.h); usbdev_do_ioctl calls usb_reset_device for it.
const usbdevfsReset = 0x5514

// TestFexitUSBResetDevice proves fentry/fexit BPF works in the guest (BTF in
// /sys/kernel/btf/vmlinux, BPF JIT trampolines, no lockdown): an fexit
// program on usb_reset_device counts calls, and USBDEVFS_RESET on a
// hot-plugged usb-kbd makes it run.
func TestFexitUSBResetDevice(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Fatalf("no kernel BTF: %v (CONFIG_DEBUG_INFO_BTF)", err)
	}
	counter, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatalf("BPF_MAP_CREATE: %v", err)
	}
	defer counter.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFExit, AttachTo: "usb_reset_device",
		License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMapPtr(asm.R1, counter.FD()),
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load fexit program: %v", err)
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFExit})
	if err != nil {
		t.Fatalf("attach fexit usb_reset_device: %v", err)
	}
	defer l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ul, err := guest.ListenUevents()
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	if err := guest.DeviceAdd(ctx, "usb-kbd", "kbd-reset"); err != nil {
		t.Fatal(err)
	}
	defer guest.DeviceDel(context.Background(), "kbd-reset")
	add, _, err := ul.WaitFor(ctx, guest.Match("add", "SUBSYSTEM=usb", "DEVTYPE=usb_device"))
	if err != nil {
		t.Fatal(err)
	}
	dev := "/dev/" + add.Env["DEVNAME"]
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", dev, err)
	}
	defer unix.Close(fd)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), usbdevfsReset, 0); e != 0 {
		t.Fatalf("USBDEVFS_RESET %s: %v", dev, e)
	}
	var n uint64
	if err := counter.Lookup(uint32(0), &n); err != nil {
		t.Fatal(err)
	}
	if n < 1 {
		t.Fatalf("fexit usb_reset_device ran %d times after USBDEVFS_RESET, want ≥ 1", n)
	}
	t.Log(fmt.Sprintf("fexit usb_reset_device ran %d time(s)", n))
}
