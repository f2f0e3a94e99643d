//go:build vmtest

package vmtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/vmtest/guest"
)

// drain reads uevents until none arrives for quiet, so a capture holds the
// whole burst (usb_device, usb_interface, hid, input, scsi, block, bind@).
func drain(ctx context.Context, l *guest.UeventListener, quiet time.Duration) []*guest.Uevent {
	var evs []*guest.Uevent
	for {
		qctx, cancel := context.WithTimeout(ctx, quiet)
		u, err := l.Read(qctx)
		cancel()
		if err != nil {
			return evs
		}
		evs = append(evs, u)
	}
}

// save hands each datagram to the host as a fixture named
// <scenario>/<nnn>-<action>-<subsystem>[-<devtype>].uevent (kept only when the
// runner has -artifacts).
func save(t *testing.T, ctx context.Context, scenario string, evs []*guest.Uevent) {
	for i, u := range evs {
		name := fmt.Sprintf("%s/%03d-%s-%s", scenario, i+1, u.Action, u.Env["SUBSYSTEM"])
		if d := u.Env["DEVTYPE"]; d != "" {
			name += "-" + d
		}
		if err := guest.SaveArtifact(ctx, name+".uevent", u.Raw); err != nil {
			t.Errorf("save %s: %v", name, err)
		}
	}
}

func logEvents(t *testing.T, evs []*guest.Uevent) {
	for _, u := range evs {
		t.Logf("  %s", u)
	}
}

// TestUSBKeyboardHotplug: device_add usb-kbd → the kernel's add@ uevent with
// SUBSYSTEM=usb DEVTYPE=usb_device; device_del → remove@ for the same path.
func TestUSBKeyboardHotplug(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := guest.ListenUevents()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	if err := guest.DeviceAdd(ctx, "usb-kbd", "kbd1"); err != nil {
		t.Fatal(err)
	}
	add, evs, err := l.WaitFor(ctx, guest.Match("add", "SUBSYSTEM=usb", "DEVTYPE=usb_device"))
	if err != nil {
		t.Fatalf("waiting for add@ usb_device: %v", err)
	}
	evs = append(evs, drain(ctx, l, 2*time.Second)...)
	t.Logf("after device_add usb-kbd: %d uevents", len(evs))
	logEvents(t, evs)
	if !strings.HasPrefix(add.Env["DEVNAME"], "bus/usb/") || add.Env["PRODUCT"] != "627/1/0" {
		t.Errorf("add@%s: DEVNAME=%q PRODUCT=%q, want bus/usb/… and qemu's usb-kbd 627/1/0", add.DevPath, add.Env["DEVNAME"], add.Env["PRODUCT"])
	}
	if _, err := os.Stat("/dev/" + add.Env["DEVNAME"]); err != nil {
		t.Errorf("devtmpfs node: %v", err)
	}

	if err := guest.DeviceDel(ctx, "kbd1"); err != nil {
		t.Fatal(err)
	}
	_, revs, err := l.WaitFor(ctx, func(u *guest.Uevent) bool {
		return guest.Match("remove", "SUBSYSTEM=usb", "DEVTYPE=usb_device")(u) && u.DevPath == add.DevPath
	})
	if err != nil {
		t.Fatalf("waiting for remove@%s: %v", add.DevPath, err)
	}
	revs = append(revs, drain(ctx, l, time.Second)...)
	t.Logf("after device_del kbd1: %d uevents", len(revs))
	logEvents(t, revs)
	save(t, ctx, "usb-kbd", append(evs, revs...))
}

// TestUSBStorageHotplug: a 16 MiB usb-storage device becomes a SCSI disk of
// 32768 sectors; unplugging it removes the disk and the usb_device.
func TestUSBStorageHotplug(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := guest.ListenUevents()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	if err := guest.AddUSBStorage(ctx, "stick1", 16<<20); err != nil {
		t.Fatal(err)
	}
	disk, evs, err := l.WaitFor(ctx, guest.Match("add", "SUBSYSTEM=block", "DEVTYPE=disk"))
	if err != nil {
		t.Fatalf("waiting for add@ block disk: %v", err)
	}
	evs = append(evs, drain(ctx, l, 2*time.Second)...)
	t.Logf("after usb_storage_add: %d uevents", len(evs))
	logEvents(t, evs)
	name := disk.Env["DEVNAME"]
	size, err := os.ReadFile("/sys/class/block/" + name + "/size")
	if err != nil || strings.TrimSpace(string(size)) != "32768" {
		t.Errorf("/sys/class/block/%s/size = %q (%v), want 32768 sectors", name, size, err)
	}
	if f, err := os.Open("/dev/" + name); err != nil {
		t.Errorf("open /dev/%s: %v", name, err)
	} else {
		f.Close()
	}

	if err := guest.DeviceDel(ctx, "stick1"); err != nil {
		t.Fatal(err)
	}
	_, revs, err := l.WaitFor(ctx, guest.Match("remove", "SUBSYSTEM=usb", "DEVTYPE=usb_device"))
	if err != nil {
		t.Fatalf("waiting for remove@ usb_device: %v", err)
	}
	revs = append(revs, drain(ctx, l, time.Second)...)
	logEvents(t, revs)
	var diskGone bool
	for _, u := range revs {
		diskGone = diskGone || (u.Action == "remove" && u.DevPath == disk.DevPath)
	}
	if !diskGone {
		t.Errorf("no remove@%s among %d uevents after device_del", disk.DevPath, len(revs))
	}
	save(t, ctx, "usb-storage", append(evs, revs...))
}

// TestHostRequestErrors: a bad request comes back as an error, not a hang.
func TestHostRequestErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := guest.DeviceDel(ctx, "no-such-device")
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("device_del of an unknown id: got %v, want a QMP error", err)
	}
	t.Logf("expected error: %v", err)
}
