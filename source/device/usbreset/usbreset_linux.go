//go:build linux

// Package usbreset reports USB device resets with an fexit eBPF program on
// usb_reset_device() (drivers/usb/core/hub.c). The ver #2 patch set posted
// NOTIFY_USB_DEVICE_RESET from hub_port_init(); a stock kernel has no hook
// there, and fexit is the closest place a BPF program can attach. Every
// reset of a device by its driver or from userspace (USBDEVFS_RESET,
// drivers/usb/core/devio.c:proc_resetdevice) goes through usb_reset_device;
// the program reports the calls that returned 0, so a refused reset (a root
// hub: -EISDIR; a detached device: -EINVAL; one already in progress:
// -EINPROGRESS) or a failed one (the device then goes away: a REMOVE) is
// not a reset record.
//
// fexit needs a kernel with CONFIG_USB, BTF (CONFIG_DEBUG_INFO_BTF, and
// CONFIG_DEBUG_INFO_BTF_MODULES where usbcore is a module), BPF trampolines
// (CONFIG_BPF_JIT, CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS), and a
// lockdown/LSM policy that allows BPF_PROG_TYPE_TRACING. Open returns an
// error wrapping ebpf.ErrNotSupported, with the reason, where any of that is
// missing; a transient failure (EMFILE, ENOMEM) does not match it. The vmtest guest kernel (6.12) runs it: see
// source/device/usbreset_vmtest_test.go.
package usbreset

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/bpfring"
)

// Target is the kernel function the program attaches to.
const Target = "usb_reset_device"

// devpathLen is sizeof(((struct usb_device *)0)->devpath).
const devpathLen = 16

// Names of the collection's maps and program.
const (
	eventsMap = "wq_usb_events"
	dropsMap  = "wq_usb_drops"
	progName  = "wq_usb_reset"
)

// eventSize is the ring record: struct { u32 busnum; u32 pad; char devpath[16]; }.
const eventSize = 8 + devpathLen

// layout is where the program finds the name's parts, from kernel BTF.
type layout struct {
	devpath, bus, busnum uint32 // byte offsets
}

func memberOffset(s *btf.Struct, name string) (uint32, error) {
	for _, m := range s.Members {
		if m.Name == name {
			return uint32(m.Offset.Bytes()), nil
		}
	}
	return 0, fmt.Errorf("struct %s has no member %q", s.Name, name)
}

// kernelSpec returns the BTF that defines usb_reset_device: vmlinux's when
// the USB core is built in (CONFIG_USB=y), else the loaded usbcore module's
// (CONFIG_USB=m; module BTF is split BTF on top of vmlinux's, so it has
// struct usb_device too). cilium/ebpf finds the attach target in either.
func kernelSpec() (*btf.Spec, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("kernel BTF (CONFIG_DEBUG_INFO_BTF): %w", notSupported(err))
	}
	var fn *btf.Func
	if spec.TypeByName(Target, &fn) == nil {
		return spec, nil
	}
	if mod, err := btf.LoadKernelModuleSpec("usbcore"); err == nil && mod.TypeByName(Target, &fn) == nil {
		return mod, nil
	}
	return nil, fmt.Errorf("no %s in the kernel's BTF (vmlinux or usbcore module): %s (%w)",
		Target, noUSBReason("/proc/config.gz", "/sys"), ebpf.ErrNotSupported)
}

// noUSBReason says why the kernel has no usb_reset_device to attach to,
// from the kernel's own config (procConfig, CONFIG_IKCONFIG_PROC) where it
// has one, else from sysfs (sys).
func noUSBReason(procConfig, sys string) string {
	switch v, ok := kconfig(procConfig, "CONFIG_USB"); {
	case ok && v == "":
		return "CONFIG_USB is not set (" + procConfig + ")"
	case ok && v == "m":
		if _, err := os.Stat(filepath.Join(sys, "module/usbcore")); err != nil {
			return "CONFIG_USB=m and the usbcore module is not loaded"
		}
		return "usbcore is loaded but has no BTF (CONFIG_DEBUG_INFO_BTF_MODULES off?)"
	}
	if _, err := os.Stat(filepath.Join(sys, "bus/usb")); err != nil {
		return "no USB core: " + filepath.Join(sys, "bus/usb") + " does not exist (CONFIG_USB off or usbcore not loaded)"
	}
	return "the USB core is present but its BTF lacks " + Target + " (usbcore built without BTF?)"
}

// kconfig looks name up in a gzipped kernel config: its value, "" for
// "# name is not set", and whether the file said either.
func kconfig(path, name string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return "", false
	}
	sc := bufio.NewScanner(z)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+"="); ok {
			return v, true
		}
		if line == "# "+name+" is not set" {
			return "", true
		}
	}
	return "", false
}

// probeLayout finds usb_reset_device and the struct offsets in the running
// kernel's BTF.
func probeLayout() (layout, error) {
	var l layout
	spec, err := kernelSpec()
	if err != nil {
		return l, err
	}
	var udev, bus *btf.Struct
	if err := spec.TypeByName("usb_device", &udev); err != nil {
		return l, fmt.Errorf("kernel BTF has no struct usb_device: %w (%w)", err, ebpf.ErrNotSupported)
	}
	if err := spec.TypeByName("usb_bus", &bus); err != nil {
		return l, fmt.Errorf("kernel BTF has no struct usb_bus: %w (%w)", err, ebpf.ErrNotSupported)
	}
	if l.devpath, err = memberOffset(udev, "devpath"); err == nil {
		if l.bus, err = memberOffset(udev, "bus"); err == nil {
			l.busnum, err = memberOffset(bus, "busnum")
		}
	}
	if err != nil {
		return l, fmt.Errorf("%w (%w)", err, ebpf.ErrNotSupported)
	}
	return l, nil
}

// collectionSpec is, in C:
//
//	SEC("fexit/usb_reset_device")
//	int BPF_PROG(prog, struct usb_device *udev, int ret) {
//		if (ret != 0)	// refused or failed: no reset to report
//			return 0;
//		struct { u32 busnum, pad; char devpath[16]; } e = { udev->bus->busnum };
//		__builtin_memcpy(e.devpath, udev->devpath, 16);
//		bpf_ringbuf_output(&events, &e, sizeof(e), 0);	// on failure: drops[0]++ (bpfring.OutputOrDrop)
//		return 0;
//	}
//
// The loads through udev are BTF-typed pointer loads, which the verifier
// turns into fault-tolerant PROBE_MEM loads; no bpf_probe_read_kernel, which
// lockdown=confidentiality forbids.
func collectionSpec(l layout) *ebpf.CollectionSpec {
	return &ebpf.CollectionSpec{
		Maps: bpfring.Maps(eventsMap, dropsMap, 64<<10),
		Programs: map[string]*ebpf.ProgramSpec{
			progName: {
				Name: progName, Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFExit, AttachTo: Target,
				License: "GPL",
				Instructions: append(asm.Instructions{
					// fexit ctx: u64 slots, the arguments then the return value.
					asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord), // ret = ctx[1]
					asm.JNE.Imm32(asm.R2, 0, bpfring.Exit),    // int: low 32 bits only
					asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord), // udev = ctx[0]
					asm.LoadMem(asm.R2, asm.R6, int16(l.bus), asm.DWord),
					asm.LoadMem(asm.R3, asm.R2, int16(l.busnum), asm.Word),
					asm.StoreMem(asm.RFP, -24, asm.R3, asm.DWord),
					asm.LoadMem(asm.R3, asm.R6, int16(l.devpath), asm.DWord),
					asm.StoreMem(asm.RFP, -16, asm.R3, asm.DWord),
					asm.LoadMem(asm.R3, asm.R6, int16(l.devpath+8), asm.DWord),
					asm.StoreMem(asm.RFP, -8, asm.R3, asm.DWord),
				}, bpfring.OutputOrDrop(eventsMap, dropsMap, -24, eventSize)...),
			},
		},
	}
}

// notSupported marks a failed load or attach as the kernel's refusal, so
// that it matches ebpf.ErrNotSupported, unless the failure was transient
// (bpfring.Transient: EMFILE, ENOMEM...), which says nothing about the
// kernel and is returned as it is.
func notSupported(err error) error {
	if bpfring.Transient(err) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, ebpf.ErrNotSupported)
}

// Tracer receives USB device resets.
type Tracer struct {
	r *bpfring.Reader
}

// Open loads and attaches the fexit program. Where the kernel cannot run
// it, the error wraps ebpf.ErrNotSupported and says why; a transient
// failure (bpfring.Transient) does not.
func Open() (*Tracer, error) {
	l, err := probeLayout()
	if err != nil {
		return nil, fmt.Errorf("usbreset: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("usbreset: %w", err)
	}
	coll, err := ebpf.NewCollection(collectionSpec(l))
	if err != nil {
		// EPERM here means the kernel refuses BPF_PROG_TYPE_TRACING for
		// this process: lockdown, a BPF LSM policy, or missing CAP_BPF.
		return nil, fmt.Errorf("usbreset: load fexit/%s: %w", Target, notSupported(err))
	}
	lk, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[progName], AttachType: ebpf.AttachTraceFExit})
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("usbreset: attach fexit/%s: %w", Target, notSupported(err))
	}
	r, err := bpfring.NewReader("usbreset", coll, lk, eventsMap, dropsMap)
	if err != nil {
		return nil, err
	}
	return &Tracer{r: r}, nil
}

// Read waits for the next reset and returns the device's kernel name, as
// usb_alloc_dev names it: "usbN" for a root hub (devpath "0"), else
// "BUSNUM-DEVPATH" ("3-7.7"). After Close it returns an error matching
// watchq.ErrClosed (and os.ErrClosed).
func (t *Tracer) Read() (string, error) {
	s, err := t.r.Read()
	if err != nil {
		return "", closedErr(err)
	}
	return decodeName(s)
}

func decodeName(s []byte) (string, error) {
	if len(s) < eventSize {
		return "", fmt.Errorf("usbreset: %d-byte record, want %d", len(s), eventSize)
	}
	bus := binary.NativeEndian.Uint32(s)
	path := s[8:eventSize]
	for i, c := range path {
		if c == 0 {
			path = path[:i]
			break
		}
	}
	if len(path) == 0 {
		return "", errors.New("usbreset: empty devpath")
	}
	if string(path) == "0" {
		return "usb" + strconv.FormatUint(uint64(bus), 10), nil
	}
	return strconv.FormatUint(uint64(bus), 10) + "-" + string(path), nil
}

// Drops returns how many resets were dropped on a full ring buffer since
// the previous call.
func (t *Tracer) Drops() (uint64, error) { return t.r.Drops() }

// Close detaches the program; a blocked Read returns watchq.ErrClosed.
// Later calls do nothing and return nil.
func (t *Tracer) Close() error { return t.r.Close() }

// closedErr turns the ring buffer's "closed" (os.ErrClosed) into
// watchq.ErrClosed, which matches os.ErrClosed too.
func closedErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("usbreset: read: %w", watchq.ErrClosed)
	}
	return err
}
