package uevent

import (
	"errors"
	"strings"
	"testing"
)

func dgram(parts ...string) []byte { return []byte(strings.Join(parts, "\x00") + "\x00") }

func TestParse(t *testing.T) {
	var e Event
	b := dgram("add@/devices/pci0000:00/0000:00:04.0/usb1/1-1", "ACTION=add",
		"DEVPATH=/devices/pci0000:00/0000:00:04.0/usb1/1-1", "SUBSYSTEM=usb", "DEVTYPE=usb_device",
		"EMPTY=", "SEQNUM=1234")
	if err := Parse(&e, b); err != nil {
		t.Fatal(err)
	}
	if e.Action != ActionAdd || string(e.DevPath) != "/devices/pci0000:00/0000:00:04.0/usb1/1-1" {
		t.Errorf("action %v devpath %q", e.Action, e.DevPath)
	}
	if string(e.Name()) != "1-1" {
		t.Errorf("Name = %q", e.Name())
	}
	if !e.Is("DEVTYPE", "usb_device") || e.Get("EMPTY") == nil || len(e.Get("EMPTY")) != 0 || e.Get("NOPE") != nil {
		t.Errorf("Get/Is wrong: %v", e.String())
	}
	if len(e.Vars) != 6 {
		t.Errorf("%d vars", len(e.Vars))
	}
}

func TestParseNoFinalNUL(t *testing.T) {
	var e Event
	if err := Parse(&e, []byte("remove@/devices/virtual/block/loop0\x00ACTION=remove")); err != nil {
		t.Fatal(err)
	}
	if e.Action != ActionRemove || !e.Is("ACTION", "remove") {
		t.Fatal(e.String())
	}
}

func TestParseUnknownAction(t *testing.T) {
	var e Event
	if err := Parse(&e, dgram("frob@/devices/x")); err != nil {
		t.Fatal(err)
	}
	if e.Action != ActionUnknown {
		t.Fatal(e.Action)
	}
}

func TestParseRejects(t *testing.T) {
	many := []string{"add@/devices/x"}
	for range MaxVars + 1 {
		many = append(many, "K=V")
	}
	for name, b := range map[string][]byte{
		"empty":           {},
		"only NUL":        {0},
		"no at":           dgram("add/devices/x"),
		"empty action":    dgram("@/devices/x"),
		"empty devpath":   dgram("add@"),
		"relative":        dgram("add@devices/x"),
		"no equals":       dgram("add@/devices/x", "FOO"),
		"empty key":       dgram("add@/devices/x", "=v"),
		"empty var":       []byte("add@/devices/x\x00\x00A=b\x00"),
		"too many":        dgram(many...),
		"too long":        append(dgram("add@/devices/x", "K="), make([]byte, MaxSize)...),
		"action mismatch": dgram("add@/devices/x", "ACTION=remove"),
		"path mismatch":   dgram("add@/devices/x", "DEVPATH=/devices/y"),
		"libudev header":  []byte("libudev\x00\xfe\xed\xca\xfe"),
	} {
		var e Event
		err := Parse(&e, b)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse = %v, want ErrMalformed", name, err)
		}
	}
}

func TestParseMaxVars(t *testing.T) {
	parts := []string{"add@/devices/x"}
	for range MaxVars {
		parts = append(parts, "K=V")
	}
	var e Event
	if err := Parse(&e, dgram(parts...)); err != nil {
		t.Fatal(err)
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	var e Event
	b := dgram("change@/devices/virtual/block/loop0", "ACTION=change", "DEVPATH=/devices/virtual/block/loop0",
		"SUBSYSTEM=block", "MAJOR=7", "MINOR=0", "DEVNAME=loop0", "DEVTYPE=disk", "DISKSEQ=9", "SEQNUM=4242")
	if n := testing.AllocsPerRun(100, func() {
		if err := Parse(&e, b); err != nil || !e.Is("SUBSYSTEM", "block") {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Parse allocates %v times", n)
	}
}

// FuzzParse checks that no input crashes the parser and that accepted input
// satisfies Parse's documented invariants.
func FuzzParse(f *testing.F) {
	f.Add(dgram("add@/devices/virtual/block/loop0", "ACTION=add", "SUBSYSTEM=block"))
	f.Add(dgram("remove@/devices/pci0000:00/usb1/1-1", "DEVTYPE=usb_device"))
	f.Add([]byte("libudev\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if err := Parse(&e, b); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(e.DevPath) == 0 || e.DevPath[0] != '/' || len(e.Vars) > MaxVars {
			t.Fatalf("accepted bad event %q", e.String())
		}
		for _, v := range e.Vars {
			if len(v.Key) == 0 {
				t.Fatalf("empty key in %q", b)
			}
		}
	})
}
