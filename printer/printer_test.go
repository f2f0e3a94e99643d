package printer

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq/record"
)

// sampleRead is one read of five records of every kind.
func sampleRead(t *testing.T) []byte {
	t.Helper()
	var buf []byte
	buf, _ = record.KeyNotification{Subtype: record.KeyLinked, Tag: 1, KeyID: 0x2ffc2e5d, Aux: 1035096409}.AppendBinary(buf)
	buf, _ = record.USBNotification{Subtype: record.USBDeviceReset, Tag: 4, Name: "3-7.7"}.AppendBinary(buf)
	buf, _ = record.BlockNotification{Subtype: record.BlockErrorCriticalMedium, Tag: 4, Dev: 0x00800050, Sector: 0x64000ef8}.AppendBinary(buf)
	buf, _ = record.Loss{}.AppendBinary(buf)
	buf, _ = record.Removal{Tag: 2, ID: 5}.AppendBinary(buf)
	return buf
}

func print(t *testing.T, o Options, buf []byte) string {
	t.Helper()
	var out bytes.Buffer
	o.Now = func() time.Time { return time.Date(2026, 12, 1, 23, 0, 0, 0, time.UTC) }
	if o.Devices == nil {
		o.Devices = fakeDevices{}
	}
	if err := New(&out, o).Read(buf); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

type fakeDevices struct{}

func (fakeDevices) DeviceName(ma, mi uint32) string {
	if ma == 8 && mi == 80 {
		return "sdf"
	}
	return ""
}

type names map[record.Tag]string

func (n names) WatchName(t record.Tag) string { return n[t] }

func TestSampleFormat(t *testing.T) {
	buf := sampleRead(t)
	// Lines as the kernel sample prints them (V2-07, V2-11, V2-12).
	want := `read() = 86
NOTIFY[000]: ty=000001 sy=02 i=00000110
KEY 2ffc2e5d change=2[linked] aux=1035096409
NOTIFY[010]: ty=000003 sy=02 i=00000416
USB 3-7.7 dev-reset e=0 r=0
NOTIFY[026]: ty=000002 sy=06 i=00000418
BLOCK 00800050 e=6[critical medium] s=64000ef8
NOTIFY[03e]: ty=000000 sy=01 i=00000008
-- LOSS --
NOTIFY[046]: ty=000000 sy=00 i=00000210
REMOVAL of watchpoint 00000002
`
	if got := print(t, Options{Format: FormatSample}, buf); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	var out bytes.Buffer
	if err := New(&out, Options{Format: FormatSample}).Read(buf[:20]); err == nil {
		t.Error("truncated buffer printed without error")
	}
}

func TestLineFormat(t *testing.T) {
	want := `2026-12-01T23:00:00Z key 805056093 linked key=1035096409 tag=1
2026-12-01T23:00:00Z usb 3-7.7 dev-reset tag=4
2026-12-01T23:00:00Z block sdf (8:80) critical-medium sector=1677725432 tag=4
2026-12-01T23:00:00Z loss records were lost
2026-12-01T23:00:00Z removal tag=2: key 5 (@u) is no longer watched
`
	if got := print(t, Options{Names: names{2: "key 5 (@u)"}}, sampleRead(t)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	b, _ := record.BlockNotification{Subtype: record.BlockAdd, Dev: record.KernelDev(7, 0), Sector: 2048, Name: "loop0",
		TypeInfo: uint16(record.BlockFlagPartition >> record.InfoTypeInfoShift)}.AppendBinary(nil)
	b, _ = record.Loss{Count: 12}.AppendBinary(b)
	b, _ = record.Removal{Tag: 4}.AppendBinary(b)
	want = `2026-12-01T23:00:00Z block loop0 (7:0) add size=2048 partition tag=0
2026-12-01T23:00:00Z loss 12 records lost
2026-12-01T23:00:00Z removal tag=4: the watch is gone
`
	if got := print(t, Options{}, b); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestKeyctlFormat: keyctl_watch.c's lines; records it ignores print
// nothing.
func TestKeyctlFormat(t *testing.T) {
	var b []byte
	for _, k := range []record.KeyNotification{
		{Subtype: record.KeyLinked, KeyID: 10, Aux: 11}, {Subtype: record.KeyUnlinked, KeyID: 10, Aux: 11},
		{Subtype: record.KeyUpdated, KeyID: 11}, {Subtype: record.KeySetattr, KeyID: 10},
		{Subtype: record.KeyCleared, KeyID: 10}, {Subtype: record.KeyRevoked, KeyID: 10},
		{Subtype: record.KeyInvalidated, KeyID: 10}, {Subtype: record.KeyInstantiated, KeyID: 12},
		{Subtype: 99, KeyID: 10},
	} {
		b, _ = k.AppendBinary(b)
	}
	b, _ = record.USBNotification{Name: "1-1"}.AppendBinary(b)
	b, _ = record.Loss{}.AppendBinary(b)
	b, _ = record.Removal{Tag: 1, ID: 10}.AppendBinary(b)
	b, _ = record.Removal{Tag: 1}.AppendBinary(b)
	want := "10 link 11\n10 unlk 11\n11 upd\n10 attr\n10 clr\n10 rev\n10 inv\n12 inst\n-- LOSS --\n10 gc\n0 gc\n"
	if got := print(t, Options{Format: FormatKeyctl}, b); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestJSONFormat(t *testing.T) {
	buf := sampleRead(t)
	// An I/O error at sector 0: every numeric field is there.
	buf, _ = record.BlockNotification{Subtype: record.BlockErrorIO, Dev: record.KernelDev(7, 0)}.AppendBinary(buf)
	got := print(t, Options{Format: FormatJSON, Raw: true}, buf)
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 6 {
		t.Fatalf("json:\n%s", got)
	}
	var objs []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if m["v"] != float64(Version) || m["ts"] != "2026-12-01T23:00:00Z" || m["raw"] == "" {
			t.Errorf("%q: no version, time or raw", l)
		}
		objs = append(objs, m)
	}
	want := []map[string]any{
		{"event": "linked", "key_id": float64(0x2ffc2e5d), "aux": float64(1035096409), "tag": float64(1)},
		{"event": "dev-reset", "name": "3-7.7", "error": float64(0), "reserved": float64(0)},
		{"event": "critical-medium", "dev": "8:80", "name": "sdf", "sector": float64(0x64000ef8)},
		{"event": "loss", "lost": float64(0)},
		{"event": "removal", "id": float64(5), "tag": float64(2)},
		{"event": "io", "dev": "7:0", "major": float64(7), "minor": float64(0), "sector": float64(0), "name": ""},
	}
	for i, w := range want {
		for k, v := range w {
			if objs[i][k] != v {
				t.Errorf("record %d: %s = %v, want %v (%s)", i, k, objs[i][k], v, lines[i])
			}
		}
	}
	if _, ok := objs[5]["size"]; ok {
		t.Errorf("error record has a size: %s", lines[5])
	}
}

// TestEventNamesAreFilterNames: every named subtype's JSON event parses
// back as a filter name to the same subtype.
func TestEventNamesAreFilterNames(t *testing.T) {
	for _, typ := range []record.Type{record.TypeKey, record.TypeBlock, record.TypeUSB} {
		for s := range 256 {
			n := record.EventName(typ, uint8(s))
			if n == "" {
				continue
			}
			if got, ok := record.ParseEvent(typ, n); !ok || got != uint8(s) {
				t.Errorf("%v subtype %d: event %q parses as %d, %v", typ, s, n, got, ok)
			}
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, n := range Formats() {
		f, err := ParseFormat(n)
		if err != nil || f.String() != n {
			t.Errorf("ParseFormat(%q) = %v, %v", n, f, err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("ParseFormat(xml) succeeded")
	}
}
