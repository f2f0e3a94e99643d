package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/watchq/watchq"
)

func TestParseFilter(t *testing.T) {
	tag := func(n uint32) (uint32, uint32) { return n << watchq.InfoIDShift, watchq.InfoID }
	t1f, t1m := tag(1)
	t2f, t2m := tag(2)
	t4f, t4m := tag(4)
	all := watchq.AllSubtypes
	for _, tc := range []struct {
		in   []string
		want []watchq.FilterEntry
	}{
		{nil, nil},
		{[]string{"key"}, []watchq.FilterEntry{{Type: watchq.TypeKey, Subtypes: all}}},
		{[]string{"key:linked,unlinked"}, []watchq.FilterEntry{{Type: watchq.TypeKey, Subtypes: watchq.SubtypeSet(2, 3)}}},
		{[]string{"KEY:Linked,3"}, []watchq.FilterEntry{{Type: watchq.TypeKey, Subtypes: watchq.SubtypeSet(2, 3)}}},
		{[]string{"usb"}, []watchq.FilterEntry{{Type: watchq.TypeUSB, Subtypes: all}}},
		{[]string{"usb:dev-reset"}, []watchq.FilterEntry{{Type: watchq.TypeUSB, Subtypes: watchq.SubtypeSet(watchq.USBDeviceReset)}}},
		{[]string{"block:error"}, []watchq.FilterEntry{{Type: watchq.TypeBlock, Subtypes: watchq.SubtypeSet(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)}}},
		{[]string{"block:lifecycle"}, []watchq.FilterEntry{{Type: watchq.TypeBlock, Subtypes: watchq.SubtypeSet(0x80, 0x81, 0x82, 0x83, 0x84)}}},
		{[]string{"block:critical-medium,io,media-change"}, []watchq.FilterEntry{{Type: watchq.TypeBlock, Subtypes: watchq.SubtypeSet(6, 10, 0x83)}}},
		{[]string{"key@1"}, []watchq.FilterEntry{{Type: watchq.TypeKey, Subtypes: all, InfoFilter: t1f, InfoMask: t1m}}},
		{[]string{"key:linked@1,2"}, []watchq.FilterEntry{
			{Type: watchq.TypeKey, Subtypes: watchq.SubtypeSet(2), InfoFilter: t1f, InfoMask: t1m},
			{Type: watchq.TypeKey, Subtypes: watchq.SubtypeSet(2), InfoFilter: t2f, InfoMask: t2m},
		}},
		{[]string{"@4"}, []watchq.FilterEntry{
			{Type: watchq.TypeKey, Subtypes: all, InfoFilter: t4f, InfoMask: t4m},
			{Type: watchq.TypeBlock, Subtypes: all, InfoFilter: t4f, InfoMask: t4m},
			{Type: watchq.TypeUSB, Subtypes: all, InfoFilter: t4f, InfoMask: t4m},
		}},
		{[]string{"key@1 usb", "block:error"}, []watchq.FilterEntry{
			{Type: watchq.TypeKey, Subtypes: all, InfoFilter: t1f, InfoMask: t1m},
			{Type: watchq.TypeUSB, Subtypes: all},
			{Type: watchq.TypeBlock, Subtypes: watchq.SubtypeSet(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)},
		}},
		{[]string{"0x800001:1"}, []watchq.FilterEntry{{Type: 0x800001, Subtypes: watchq.SubtypeSet(1)}}},
	} {
		got, err := ParseFilter(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
		if got != nil {
			if _, err := watchq.NewFilter(got...); err != nil {
				t.Errorf("%q: engine refuses the entries: %v", tc.in, err)
			}
		}
	}
}

func TestParseFilterErrors(t *testing.T) {
	for in, want := range map[string]string{
		"bogus":       "unknown type",
		"key:frobbed": "unknown key subtype",
		"key:256":     "unknown key subtype",
		"usb@256":     "bad tag",
		"usb@":        "bad tag",
		":linked":     "missing type",
		"5":           "unknown type", // a kernel type watchq does not know
		"block:error@" + strings.Repeat("1,", 16) + "1": "at most 16",
	} {
		_, err := ParseFilter([]string{in})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", in, err, want)
		}
	}
}

// TestFilterMatches runs parsed filters through the engine's own matching.
func TestFilterMatches(t *testing.T) {
	es, err := ParseFilter([]string{"key:linked@1 block:error usb:dev-add"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := watchq.NewFilter(es...)
	if err != nil {
		t.Fatal(err)
	}
	info := func(tag uint8) uint32 { return watchq.MakeInfo(16, tag, 0) }
	for _, tc := range []struct {
		typ  watchq.Type
		sub  uint8
		tag  uint8
		want bool
	}{
		{watchq.TypeKey, watchq.KeyLinked, 1, true},
		{watchq.TypeKey, watchq.KeyLinked, 2, false},
		{watchq.TypeKey, watchq.KeyUnlinked, 1, false},
		{watchq.TypeBlock, watchq.BlockErrorCriticalMedium, 4, true},
		{watchq.TypeBlock, watchq.BlockAdd, 4, false},
		{watchq.TypeUSB, watchq.USBDeviceAdd, 9, true},
		{watchq.TypeUSB, watchq.USBDeviceReset, 9, false},
	} {
		if got := f.Match(tc.typ, tc.sub, info(tc.tag)); got != tc.want {
			t.Errorf("%v/%d tag %d: match %v, want %v", tc.typ, tc.sub, tc.tag, got, tc.want)
		}
	}
}
