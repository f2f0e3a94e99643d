package record

import (
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
)

// rawFilter builds struct watch_notification_filter bytes by hand.
func rawFilter(nr, reserved uint32, entries ...[11]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, nr)
	b = binary.LittleEndian.AppendUint32(b, reserved)
	for _, e := range entries {
		for _, w := range e {
			b = binary.LittleEndian.AppendUint32(b, w)
		}
	}
	return b
}

func entry(typ, infoFilter, infoMask uint32, sub0 uint32) [11]uint32 {
	return [11]uint32{typ, infoFilter, infoMask, sub0}
}

// TestFilterValidation mirrors kernel/watch_queue.c:watch_queue_set_filter.
func TestFilterValidation(t *testing.T) {
	ok := entry(1, 0, 0, ^uint32(0))
	var seventeen [][11]uint32
	for range 17 {
		seventeen = append(seventeen, ok)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr error
		kept    int
	}{
		{"one entry", rawFilter(1, 0, ok), nil, 1},
		{"sixteen entries", rawFilter(16, 0, seventeen[:16]...), nil, 16},
		{"zero entries", rawFilter(0, 0), syscall.EINVAL, 0},
		{"seventeen entries", rawFilter(17, 0, seventeen...), syscall.EINVAL, 0},
		{"huge count", rawFilter(0xffffffff, 0, ok), syscall.EINVAL, 0},
		{"reserved set", rawFilter(1, 1, ok), syscall.EINVAL, 0},
		{"short header", []byte{1, 0, 0}, syscall.EINVAL, 0},
		{"short entries", rawFilter(2, 0, ok), syscall.EINVAL, 0},
		{"info_filter outside mask", rawFilter(1, 0, entry(1, 0x100, 0, 1)), syscall.EINVAL, 0},
		{"info_filter inside mask", rawFilter(1, 0, entry(1, 0x100, 0xff00, 1)), nil, 1},
		{"mask covers length", rawFilter(1, 0, entry(1, 0, 0x7f, 1)), syscall.EINVAL, 0},
		{"mask covers one length bit", rawFilter(1, 0, entry(1, 0, 0x01, 1)), syscall.EINVAL, 0},
		{"mask bit 7 allowed", rawFilter(1, 0, entry(1, 0, 0x80, 1)), nil, 1},
		{"unknown type dropped", rawFilter(2, 0, ok, entry(uint32(TypeNR), 0, 0, 1)), nil, 1},
		{"mount and superblock types kept", rawFilter(2, 0, entry(uint32(TypeMount), 0, 0, 1), entry(uint32(TypeSuperblock), 0, 0, 1)), nil, 2},
		{"type above 24 bits dropped", rawFilter(1, 0, entry(0x1000001, 0, 0, 1)), nil, 0},
		{"publisher type kept", rawFilter(1, 0, entry(uint32(TypeUserFirst), 0, 0, 1)), nil, 1},
		{"CVE-2022-0995 type 1023", rawFilter(1, 0, entry(1023, 0, 0, 1)), nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFilter(tc.in)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("ParseFilter: got error %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if len(f.kept) != tc.kept {
				t.Errorf("kept %d entries, want %d", len(f.kept), tc.kept)
			}
			out, _ := f.MarshalBinary()
			if n := FilterHeaderSize + int(binary.LittleEndian.Uint32(tc.in))*FilterEntrySize; string(out) != string(tc.in[:n]) {
				t.Errorf("MarshalBinary does not round-trip:\n got % x\nwant % x", out, tc.in[:n])
			}
		})
	}
}

func TestFilterMatch(t *testing.T) {
	f, err := NewFilter(
		FilterEntry{Type: TypeKey, Subtypes: SubtypeSet(KeyLinked)},
		FilterEntry{Type: TypeBlock, Subtypes: SubtypeSet(BlockAdd, 200)},                       // subtypes >= 32
		FilterEntry{Type: TypeUSB, Subtypes: AllSubtypes, InfoMask: InfoID, InfoFilter: 7 << 8}, // tag 7 only
		FilterEntry{Type: TypeUserFirst, Subtypes: AllSubtypes, InfoMask: InfoFlag0, InfoFilter: InfoFlag0},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		typ     Type
		subtype uint8
		info    uint32
		want    bool
	}{
		{"key linked", TypeKey, KeyLinked, 16, true},
		{"key unlinked", TypeKey, KeyUnlinked, 16, false},
		{"block add (0x80)", TypeBlock, BlockAdd, 29, true},
		{"block 200", TypeBlock, 200, 24, true},
		{"block 201", TypeBlock, 201, 24, false},
		{"block IO", TypeBlock, BlockErrorIO, 24, false},
		{"usb tag 7", TypeUSB, USBDeviceAdd, MakeInfo(20, 7, 0), true},
		{"usb tag 6", TypeUSB, USBDeviceAdd, MakeInfo(20, 6, 0), false},
		{"user flag0", TypeUserFirst, 9, MakeInfo(20, 0, 1), true},
		{"user no flag0", TypeUserFirst, 9, MakeInfo(20, 0, 2), false},
		{"type not in filter", TypeUserFirst + 1, 0, 8, false},
	} {
		if got := f.Match(tc.typ, tc.subtype, tc.info); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
	// A filter whose entries are all unknown types rejects everything.
	none, err := NewFilter(FilterEntry{Type: 77, Subtypes: AllSubtypes})
	if err != nil {
		t.Fatal(err)
	}
	if none.Match(TypeKey, 0, 16) {
		t.Error("all-unknown filter matched a key record")
	}
}

func FuzzParseFilter(f *testing.F) {
	f.Add(rawFilter(1, 0, entry(1, 0, 0, ^uint32(0))))
	f.Add(rawFilter(2, 0, entry(2, 0x100, 0xff00, 3), entry(1023, 0, 0, 1)))
	f.Add(rawFilter(17, 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		flt, err := ParseFilter(b)
		if err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("error %v is not EINVAL", err)
			}
			return
		}
		out, _ := flt.MarshalBinary()
		again, err := ParseFilter(out)
		if err != nil {
			t.Fatalf("re-parse of marshalled filter: %v", err)
		}
		if len(again.kept) != len(flt.kept) || len(flt.given) < 1 || len(flt.given) > MaxFilters {
			t.Fatalf("round trip changed the filter")
		}
		for _, e := range flt.kept {
			if !e.Type.Known() || e.InfoMask&InfoLength != 0 || e.InfoFilter&^e.InfoMask != 0 {
				t.Fatalf("kept invalid entry %+v", e)
			}
		}
		for st := range 256 {
			_ = flt.Match(TypeKey, uint8(st), 16)
		}
	})
}
