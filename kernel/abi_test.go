package kernel

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestKeyFilterMarshal(t *testing.T) {
	b, err := KeyFilter().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// nr_filters=1, reserved=0, type=1, info_filter=0, info_mask=0, 8 words of ones:
	// samples/watch_queue/watch_test.c's filter, with all 256 subtypes.
	want := "01000000" + "00000000" + "01000000" + "00000000" + "00000000" + string(bytes.Repeat([]byte("ffffffff"), 8))
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("KeyFilter() = %s, want %s", got, want)
	}
	b, _ = KeyFilter(2, 33).MarshalBinary()
	if b[20] != 0x04 || b[24] != 0x02 || len(b) != FilterHeaderSize+FilterEntrySize {
		t.Errorf("KeyFilter(2, 33) = %x", b)
	}
}

func TestFilterMarshalRejects(t *testing.T) {
	for name, f := range map[string]Filter{
		"empty":           {},
		"too many":        make(Filter, MaxFilters+1),
		"filter not mask": {{Type: 1, InfoFilter: 0x100, InfoMask: 0}},
		"mask on length":  {{Type: 1, InfoMask: 0x7f}},
	} {
		if _, err := f.MarshalBinary(); err == nil {
			t.Errorf("%s: MarshalBinary succeeded", name)
		}
	}
}

func TestCheckFilterBytes(t *testing.T) {
	good, _ := KeyFilter().MarshalBinary()
	for _, tc := range []struct {
		b  []byte
		ok bool
	}{
		{good, true},
		{good[:7], false},
		{good[:FilterHeaderSize+FilterEntrySize-1], false},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0}, true},     // nr 0: the kernel says EINVAL before reading on
		{[]byte{17, 0, 0, 0, 0, 0, 0, 0}, true},    // nr 17: same
		{[]byte{2, 0, 0, 0, 0, 0, 0, 0, 1}, false}, // nr 2 needs 96 bytes
	} {
		if err := checkFilterBytes(tc.b); (err == nil) != tc.ok {
			t.Errorf("checkFilterBytes(%x) = %v, want ok=%v", tc.b, err, tc.ok)
		}
	}
}
