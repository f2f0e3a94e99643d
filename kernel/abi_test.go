package kernel

import (
	"testing"

	"github.com/watchq/watchq/record"
)

func TestCheckFilterBytes(t *testing.T) {
	f, err := record.NewFilter(record.FilterEntry{Type: record.TypeKey, Subtypes: record.AllSubtypes})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := f.MarshalBinary()
	for _, tc := range []struct {
		b  []byte
		ok bool
	}{
		{good, true},
		{good[:7], false},
		{good[:record.FilterHeaderSize+record.FilterEntrySize-1], false},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0}, true},     // nr 0: the kernel says EINVAL before reading on
		{[]byte{17, 0, 0, 0, 0, 0, 0, 0}, true},    // nr 17: same
		{[]byte{2, 0, 0, 0, 0, 0, 0, 0, 1}, false}, // nr 2 needs 96 bytes
	} {
		if err := checkFilterBytes(tc.b); (err == nil) != tc.ok {
			t.Errorf("checkFilterBytes(%x) = %v, want ok=%v", tc.b, err, tc.ok)
		}
	}
}
