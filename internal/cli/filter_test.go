package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/watchq/watchq/record"
)

func TestParseFilter(t *testing.T) {
	tag := func(n uint32) (uint32, uint32) { return n << record.InfoIDShift, record.InfoID }
	t1f, t1m := tag(1)
	t2f, t2m := tag(2)
	t4f, t4m := tag(4)
	all := record.AllSubtypes
	for _, tc := range []struct {
		in   []string
		want []record.FilterEntry
	}{
		{nil, nil},
		{[]string{"key"}, []record.FilterEntry{{Type: record.TypeKey, Subtypes: all}}},
		{[]string{"key:linked,unlinked"}, []record.FilterEntry{{Type: record.TypeKey, Subtypes: record.SubtypeSet(2, 3)}}},
		{[]string{"KEY:Linked,3"}, []record.FilterEntry{{Type: record.TypeKey, Subtypes: record.SubtypeSet(2, 3)}}},
		{[]string{"usb"}, []record.FilterEntry{{Type: record.TypeUSB, Subtypes: all}}},
		{[]string{"usb:dev-reset"}, []record.FilterEntry{{Type: record.TypeUSB, Subtypes: record.SubtypeSet(record.USBDeviceReset)}}},
		{[]string{"block:error"}, []record.FilterEntry{{Type: record.TypeBlock, Subtypes: record.SubtypeSet(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)}}},
		{[]string{"block:lifecycle"}, []record.FilterEntry{{Type: record.TypeBlock, Subtypes: record.SubtypeSet(0x80, 0x81, 0x82, 0x83, 0x84)}}},
		{[]string{"block:critical-medium,io,media-change"}, []record.FilterEntry{{Type: record.TypeBlock, Subtypes: record.SubtypeSet(6, 10, 0x83)}}},
		{[]string{"key@1"}, []record.FilterEntry{{Type: record.TypeKey, Subtypes: all, InfoFilter: t1f, InfoMask: t1m}}},
		{[]string{"key:linked@1,2"}, []record.FilterEntry{
			{Type: record.TypeKey, Subtypes: record.SubtypeSet(2), InfoFilter: t1f, InfoMask: t1m},
			{Type: record.TypeKey, Subtypes: record.SubtypeSet(2), InfoFilter: t2f, InfoMask: t2m},
		}},
		{[]string{"@4"}, []record.FilterEntry{
			{Type: record.TypeKey, Subtypes: all, InfoFilter: t4f, InfoMask: t4m},
			{Type: record.TypeBlock, Subtypes: all, InfoFilter: t4f, InfoMask: t4m},
			{Type: record.TypeUSB, Subtypes: all, InfoFilter: t4f, InfoMask: t4m},
		}},
		{[]string{"key@1 usb", "block:error"}, []record.FilterEntry{
			{Type: record.TypeKey, Subtypes: all, InfoFilter: t1f, InfoMask: t1m},
			{Type: record.TypeUSB, Subtypes: all},
			{Type: record.TypeBlock, Subtypes: record.SubtypeSet(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)},
		}},
		{[]string{"0x800001:1"}, []record.FilterEntry{{Type: 0x800001, Subtypes: record.SubtypeSet(1)}}},
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
			if _, err := record.NewFilter(got...); err != nil {
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
	f, err := record.NewFilter(es...)
	if err != nil {
		t.Fatal(err)
	}
	info := func(tag record.Tag) uint32 { return record.MakeInfo(16, tag, 0) }
	for _, tc := range []struct {
		typ  record.Type
		sub  uint8
		tag  record.Tag
		want bool
	}{
		{record.TypeKey, record.KeyLinked, 1, true},
		{record.TypeKey, record.KeyLinked, 2, false},
		{record.TypeKey, record.KeyUnlinked, 1, false},
		{record.TypeBlock, record.BlockErrorCriticalMedium, 4, true},
		{record.TypeBlock, record.BlockAdd, 4, false},
		{record.TypeUSB, record.USBDeviceAdd, 9, true},
		{record.TypeUSB, record.USBDeviceReset, 9, false},
	} {
		if got := f.Match(tc.typ, tc.sub, info(tc.tag)); got != tc.want {
			t.Errorf("%v/%d tag %d: match %v, want %v", tc.typ, tc.sub, tc.tag, got, tc.want)
		}
	}
}

// TestCompletionsParse: every filter completion is a filter that parses.
func TestCompletionsParse(t *testing.T) {
	words, _ := completeFilter(nil, nil, "")
	if len(words) < 20 {
		t.Fatalf("only %d completions", len(words))
	}
	for _, w := range words {
		if _, err := ParseFilter([]string{w}); err != nil {
			t.Errorf("completion %q: %v", w, err)
		}
	}
}
