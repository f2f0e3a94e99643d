//go:build linux

package guest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseUevent(t *testing.T) {
	raw := []byte("add@/devices/pci0000:00/0000:00:04.0/usb1/1-1\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:04.0/usb1/1-1\x00SUBSYSTEM=usb\x00DEVTYPE=usb_device\x00SEQNUM=7\x00")
	u, err := ParseUevent(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Action != "add" || u.DevPath != "/devices/pci0000:00/0000:00:04.0/usb1/1-1" || u.Env["DEVTYPE"] != "usb_device" || u.Env["SEQNUM"] != "7" {
		t.Fatalf("parsed %+v", u)
	}
	if !Match("add", "SUBSYSTEM=usb", "DEVTYPE=usb_device")(u) || Match("remove")(u) || Match("add", "DEVTYPE=disk")(u) {
		t.Fatal("Match disagrees")
	}
	for _, bad := range []string{"", "noatsign\x00", "libudev\x00xxxx", "add@/x\x00NOEQUALS\x00", "add@/x\x00ACTION=remove\x00"} {
		if _, err := ParseUevent([]byte(bad)); err == nil {
			t.Errorf("ParseUevent(%q) accepted", bad)
		}
	}
}

// TestFixtures parses every uevent captured from the real kernel under
// testdata/uevents (see its README) so the fixtures stay valid.
func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("../../../testdata/uevents/*/*.uevent")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no fixtures in testdata/uevents")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u, err := ParseUevent(raw)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		// File names are <nnn>-<action>-<subsystem>[-<devtype>].uevent.
		parts := strings.SplitN(strings.TrimSuffix(filepath.Base(f), ".uevent"), "-", 4)
		if len(parts) < 3 || parts[1] != u.Action || parts[2] != u.Env["SUBSYSTEM"] {
			t.Errorf("%s: name does not match %s", f, u)
		}
		if u.Env["SEQNUM"] == "" || u.Env["DEVPATH"] != u.DevPath {
			t.Errorf("%s: SEQNUM=%q DEVPATH=%q header %q", f, u.Env["SEQNUM"], u.Env["DEVPATH"], u.DevPath)
		}
	}
}
