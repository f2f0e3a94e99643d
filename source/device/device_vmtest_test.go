//go:build vmtest

package device_test

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/vmtest/guest"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device"
)

// usbName is dev_name() of a non-root-hub USB device: BUS-PORT[.PORT...].
var usbName = regexp.MustCompile(`^[0-9]+-[0-9]+(\.[0-9]+)*$`)

// nextRecord is next with the guest's longer timeout (TCG is slow).
func nextRecord(t *testing.T, q *watchq.Queue, keep func(record.Record) bool) record.Record {
	t.Helper()
	return nextWithin(t, q, time.Minute, keep)
}

func isUSB(st uint8) func(record.Record) bool {
	return func(r record.Record) bool { return r.Type() == record.TypeUSB && r.Subtype() == st }
}

// TestUSBHotplugRecords hot-plugs a qemu usb-kbd and unplugs it: the device
// source posts exactly the seed's USB ADD then REMOVE records, both named
// with the kernel device name.
func TestUSBHotplugRecords(t *testing.T) {
	if !guest.InVM() {
		t.Skip("guest-only test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The guest kernel has no BPF; only the uevent part runs.
	s := open(t, device.Config{NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 5)

	if err := guest.DeviceAdd(ctx, "usb-kbd", "wqkbd"); err != nil {
		t.Fatal(err)
	}
	add, err := nextRecord(t, q, isUSB(record.USBDeviceAdd)).USB()
	if err != nil || !usbName.MatchString(add.Name) || add.Tag != 5 || add.Error != 0 || add.Reserved != 0 {
		t.Fatalf("ADD record %+v, %v", add, err)
	}
	t.Logf("ADD %s", add.Name)
	if err := guest.DeviceDel(ctx, "wqkbd"); err != nil {
		t.Fatal(err)
	}
	rm, err := nextRecord(t, q, isUSB(record.USBDeviceRemove)).USB()
	if err != nil || rm.Name != add.Name {
		t.Fatalf("REMOVE record %+v, %v; want name %q", rm, err, add.Name)
	}
}

// TestUSBStorageRecords plugs a USB disk: a USB ADD, then a block ADD for
// the SCSI disk with its size; unplugging yields the block REMOVE and the
// USB REMOVE.
func TestUSBStorageRecords(t *testing.T) {
	if !guest.InVM() {
		t.Skip("guest-only test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := open(t, device.Config{NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 6)
	const size = 16 << 20
	if err := guest.AddUSBStorage(ctx, "wqdisk", size); err != nil {
		t.Fatal(err)
	}
	add, _ := nextRecord(t, q, isUSB(record.USBDeviceAdd)).USB()
	isDisk := func(st uint8) func(record.Record) bool {
		return func(r record.Record) bool {
			b, err := r.Block()
			return err == nil && b.Subtype == st && b.TypeInfo == 0
		}
	}
	disk, _ := nextRecord(t, q, isDisk(record.BlockAdd)).Block()
	if maj, _ := record.SplitKernelDev(disk.Dev); maj != 8 || disk.Sector != size/512 {
		t.Errorf("disk ADD %+v, want major 8 (sd) and %d sectors", disk, size/512)
	}
	if err := guest.DeviceDel(ctx, "wqdisk"); err != nil {
		t.Fatal(err)
	}
	gone, _ := nextRecord(t, q, isDisk(record.BlockRemove)).Block()
	if gone.Name != disk.Name || gone.Dev != disk.Dev {
		t.Errorf("disk REMOVE %+v, want %s", gone, disk.Name)
	}
	rm, _ := nextRecord(t, q, isUSB(record.USBDeviceRemove)).USB()
	if rm.Name != add.Name {
		t.Errorf("USB REMOVE %q, want %q", rm.Name, add.Name)
	}
}
