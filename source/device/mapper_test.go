package device

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device/uevent"
)

// fixtureGlobs are the raw uevent fixtures: hand-written ones from the
// guest observations, and the harness's captures when present.
var fixtureGlobs = []string{
	"../../testdata/device/uevents/*/*.uevent",
	"../../testdata/uevents/*/*.uevent",
}

// TestMapFixtures maps every raw fixture and checks the record against what
// its name (<nnn>-<action>-<subsystem>[-<devtype>]) says it must be.
func TestMapFixtures(t *testing.T) {
	n := 0
	for _, g := range fixtureGlobs {
		files, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			n++
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			checkFixture(t, f, raw)
		}
	}
	if n == 0 {
		t.Fatal("no uevent fixtures found")
	}
	t.Logf("%d fixtures", n)
}

func checkFixture(t *testing.T, file string, raw []byte) {
	t.Helper()
	var e uevent.Event
	if err := uevent.Parse(&e, raw); err != nil {
		t.Errorf("%s: %v", file, err)
		return
	}
	name := strings.TrimSuffix(filepath.Base(file), ".uevent")
	parts := strings.SplitN(name, "-", 4) // nnn, action, subsystem, devtype
	if len(parts) < 3 {
		t.Errorf("%s: unexpected fixture name", file)
		return
	}
	action, subsys, devtype := parts[1], parts[2], ""
	if len(parts) == 4 {
		devtype = parts[3]
	}
	const size = 12345
	rec, ok := MapUevent(&e, nil, func([]byte) uint64 { return size })
	switch {
	case subsys == "usb" && devtype == "usb_device" && (action == "add" || action == "remove"):
		if !ok {
			t.Errorf("%s: no record", file)
			return
		}
		u, err := record.Record(rec).USB()
		want := map[string]uint8{"add": record.USBDeviceAdd, "remove": record.USBDeviceRemove}[action]
		if err != nil || u.Subtype != want || u.Name != string(e.Name()) || u.Error != 0 || u.Reserved != 0 || len(rec) != record.USBNameOffset+len(u.Name) {
			t.Errorf("%s: %+v (%d bytes) %v", file, u, len(rec), err)
		}
		// Root hubs are "usbN", devices "BUS-PORT[.PORT...]".
		if !strings.HasPrefix(u.Name, "usb") && !strings.Contains(u.Name, "-") {
			t.Errorf("%s: name %q", file, u.Name)
		}
	case subsys == "block" && (devtype == "disk" || devtype == "partition") && (action == "add" || action == "remove" || action == "change"):
		if !ok {
			t.Errorf("%s: no record", file)
			return
		}
		b, err := record.Record(rec).Block()
		if err != nil {
			t.Errorf("%s: %v", file, err)
			return
		}
		want, wantSector := record.BlockAdd, uint64(size)
		switch {
		case action == "remove":
			want, wantSector = record.BlockRemove, 0
		case action == "change" && e.Is("DISK_MEDIA_CHANGE", "1"):
			want = record.BlockMediaChange
		case action == "change" && e.Is("RESIZE", "1"):
			want = record.BlockResize
		case action == "change":
			want = record.BlockChange
		}
		maj, min := record.SplitKernelDev(b.Dev)
		if b.Subtype != want || b.Sector != wantSector || b.Name != string(e.Name()) ||
			string(e.Get("MAJOR")) != strconv.FormatUint(uint64(maj), 10) || string(e.Get("MINOR")) != strconv.FormatUint(uint64(min), 10) ||
			(devtype == "partition") != (uint32(b.TypeInfo)<<16 == record.BlockFlagPartition) {
			t.Errorf("%s: %+v", file, b)
		}
		if record.IsBlockError(b.Subtype) {
			t.Errorf("%s: lifecycle subtype %d collides with an error subtype", file, b.Subtype)
		}
	default:
		if ok {
			t.Errorf("%s: unexpected record %v", file, record.Record(rec))
		}
	}
}

func TestMapUSBRecordBytes(t *testing.T) {
	// The ver #2 sample's "read() = 22" for name "3-7.7".
	var e uevent.Event
	raw := "add@/devices/pci0000:00/0000:00:14.0/usb3/3-7/3-7.7\x00SUBSYSTEM=usb\x00DEVTYPE=usb_device\x00"
	if err := uevent.Parse(&e, []byte(raw)); err != nil {
		t.Fatal(err)
	}
	rec, ok := MapUevent(&e, nil, nil)
	want := []byte{3, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, '3', '-', '7', '.', '7'}
	if !ok || string(rec) != string(want) {
		t.Fatalf("record % x, want % x", rec, want)
	}
}

func TestMapIgnores(t *testing.T) {
	for _, raw := range []string{
		"add@/devices/virtual/mem/null\x00SUBSYSTEM=mem\x00",
		"add@/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00DEVTYPE=disk\x00MAJOR=x\x00MINOR=0\x00",
		"add@/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00DEVTYPE=disk\x00MINOR=0\x00",
		"move@/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00DEVTYPE=disk\x00MAJOR=7\x00MINOR=0\x00",
		"change@/devices/pci0000:00/usb1/1-1\x00SUBSYSTEM=usb\x00DEVTYPE=usb_device\x00",
	} {
		var e uevent.Event
		if err := uevent.Parse(&e, []byte(raw)); err != nil {
			t.Fatal(err)
		}
		if rec, ok := MapUevent(&e, nil, nil); ok {
			t.Errorf("%q mapped to %v", raw, record.Record(rec))
		}
	}
}

func TestMapDoesNotAllocate(t *testing.T) {
	var e uevent.Event
	raw := []byte("change@/devices/virtual/block/loop0\x00ACTION=change\x00DEVPATH=/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=0\x00DEVNAME=loop0\x00DEVTYPE=disk\x00DISKSEQ=9\x00SYNTH_UUID=0\x00SEQNUM=4242\x00")
	var buf [record.MaxRecordSize]byte
	if n := testing.AllocsPerRun(100, func() {
		if err := uevent.Parse(&e, raw); err != nil {
			t.Fatal(err)
		}
		if _, ok := MapUevent(&e, buf[:0], nil); !ok {
			t.Fatal("no record")
		}
	}); n != 0 {
		t.Fatalf("parse+map allocates %v times", n)
	}
}
