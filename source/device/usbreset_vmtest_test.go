//go:build vmtest

package device_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/vmtest/guest"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device"
	"golang.org/x/sys/unix"
)

// usbdevfsReset is USBDEVFS_RESET, _IO('U', 20) (include/uapi/linux/
// usbdevice_fs.h). drivers/usb/core/devio.c:proc_resetdevice handles it by
// calling drivers/usb/core/hub.c:usb_reset_device on the node's device.
const usbdevfsReset = 'U'<<8 | 20

// usbDevNode is the usbfs node of the USB device with kernel name name,
// /dev/bus/usb/BBB/DDD as usb_devnode (drivers/usb/core/usb.c) names it,
// from sysfs busnum and devnum.
func usbDevNode(t *testing.T, name string) string {
	t.Helper()
	var n [2]int
	for i, f := range []string{"busnum", "devnum"} {
		b, err := os.ReadFile(filepath.Join("/sys/bus/usb/devices", name, f))
		if err != nil {
			t.Fatal(err)
		}
		if n[i], err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatalf("%s/%s: %v", name, f, err)
		}
	}
	return fmt.Sprintf("/dev/bus/usb/%03d/%03d", n[0], n[1])
}

// resetUSB resets the device at node from userspace, as `usbreset` does:
// open the usbfs node read-write and issue USBDEVFS_RESET.
func resetUSB(node string) error {
	fd, err := unix.Open(node, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", node, err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, usbdevfsReset, 0); err != nil {
		return fmt.Errorf("USBDEVFS_RESET %s: %w", node, err)
	}
	return nil
}

// usbDevice is a qemu USB device for device_add.
type usbDevice struct {
	driver, id string
	props      []string
}

// TestUSBResetRecord proves the fexit program on usb_reset_device on a
// real kernel. A usb-kbd, plugged into a root port or behind a hot-plugged
// usb-hub (devpath "P.P"), is reset through usbfs: exactly one USB RESET
// record follows, named like the device's ADD record, between the ADD and
// the REMOVE. Resetting the root hub, which usb_reset_device refuses with
// -EISDIR, posts nothing.
func TestUSBResetRecord(t *testing.T) {
	if !guest.InVM() {
		t.Skip("guest-only test")
	}
	for _, tc := range []struct {
		name string
		devs []usbDevice // plugged in order; the last one is reset
		want *regexp.Regexp
	}{
		{"RootPort", []usbDevice{{"usb-kbd", "wqrst", nil}}, regexp.MustCompile(`^[0-9]+-[0-9]+$`)},
		{"BehindHub", []usbDevice{
			{"usb-hub", "wqhub", []string{"port=2"}},
			{"usb-kbd", "wqrst", []string{"port=2.1"}},
		}, regexp.MustCompile(`^[0-9]+-[0-9]+\.[0-9]+$`)},
	} {
		t.Run(tc.name, func(t *testing.T) { testUSBReset(t, tc.devs, tc.want) })
	}
}

func testUSBReset(t *testing.T, devs []usbDevice, want *regexp.Regexp) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := open(t, device.Config{NoBlockErrors: true})
	if err := s.Capabilities().USBReset; err != nil {
		t.Fatalf("Capabilities().USBReset = %v, want supported in the guest", err)
	}
	q := watch(t, s, 9)

	var names []string
	for _, d := range devs {
		if err := guest.DeviceAdd(ctx, d.driver, d.id, d.props...); err != nil {
			t.Fatal(err)
		}
		add, err := nextRecord(t, q, isUSB(record.USBDeviceAdd)).USB()
		if err != nil || !usbName.MatchString(add.Name) || add.Tag != 9 {
			t.Fatalf("ADD record %+v, %v", add, err)
		}
		t.Logf("ADD %s: %s %v", add.Name, d.driver, d.props)
		names = append(names, add.Name)
	}
	name := names[len(names)-1]
	if !want.MatchString(name) {
		t.Fatalf("device name %q, want %v", name, want)
	}
	node := usbDevNode(t, name)

	// usb_reset_device refuses a root hub (-EISDIR) before resetting
	// anything; the program must not post for it.
	root := "usb" + strings.SplitN(name, "-", 2)[0]
	err := resetUSB(usbDevNode(t, root))
	if !errors.Is(err, unix.EISDIR) {
		t.Fatalf("reset root hub %s: %v, want EISDIR", root, err)
	}
	t.Logf("root hub %s: %v", root, err)

	if err := resetUSB(node); err != nil {
		t.Fatal(err)
	}
	rst, err := nextRecord(t, q, isUSB(record.USBDeviceReset)).USB()
	if err != nil || rst.Name != name || rst.Tag != 9 || rst.Error != 0 || rst.Reserved != 0 {
		t.Fatalf("RESET record %+v, %v; want name %q", rst, err, name)
	}
	t.Logf("RESET %s (%s)", rst.Name, node)

	// Unplug in reverse order. Every USB record up to each REMOVE: no
	// second RESET (one reset, one record; none for the root hub).
	for i := len(devs) - 1; i >= 0; i-- {
		if err := guest.DeviceDel(ctx, devs[i].id); err != nil {
			t.Fatal(err)
		}
		for {
			u, err := nextRecord(t, q, func(r record.Record) bool { return r.Type() == record.TypeUSB }).USB()
			if err != nil {
				t.Fatal(err)
			}
			if u.Subtype == record.USBDeviceReset {
				t.Fatalf("unexpected RESET record %+v", u)
			}
			if u.Subtype == record.USBDeviceRemove && u.Name == names[i] {
				break
			}
		}
	}
	if st := s.Stats(); st.USBResets != 1 || st.BPFDrops != 0 {
		t.Errorf("Stats: USBResets %d, BPFDrops %d; want 1, 0", st.USBResets, st.BPFDrops)
	}
}
