package record

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

// golden reads testdata/golden/records.txt.
func golden(t *testing.T) map[string][]byte {
	t.Helper()
	f, err := os.Open("../testdata/golden/records.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := make(map[string][]byte)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) != 2 {
			continue
		}
		b, err := hex.DecodeString(fields[1])
		if err != nil {
			t.Fatalf("golden %s: %v", fields[0], err)
		}
		m[fields[0]] = b
	}
	return m
}

func TestGoldenEncodings(t *testing.T) {
	g := golden(t)
	app := func(a interface{ AppendBinary([]byte) ([]byte, error) }) []byte {
		b, err := a.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		got  []byte
	}{
		{"header", app(Header{Type: 0x123456, Subtype: 0xab, Info: 0x110})},
		{"key-linked-sample", app(KeyNotification{Subtype: KeyLinked, Tag: 1, KeyID: 0x2ffc2e5d, Aux: 1035096409})},
		{"usb-reset-sample", app(USBNotification{Subtype: USBDeviceReset, Tag: 4, Name: "3-7.7"})},
		{"block-medium-sample", app(BlockNotification{Subtype: BlockErrorCriticalMedium, Tag: 4, Dev: KernelDev(8, 80), Sector: 0x64000ef8})},
		{"removal-16", app(Removal{Tag: 1, ID: 1234})},
		{"removal-8", app(Removal{Tag: 1})},
		{"loss", app(Loss{})},
		{"loss-32", app(Loss{Count: 32})},
	} {
		want, ok := g[tc.name]
		if !ok {
			t.Fatalf("no golden vector %q", tc.name)
		}
		if !bytes.Equal(tc.got, want) {
			t.Errorf("%s: got % x, want % x", tc.name, tc.got, want)
		}
	}
}

func TestGoldenDecodings(t *testing.T) {
	g := golden(t)
	h, err := ParseHeader(append(g["header"], make([]byte, 8)...))
	if err != nil {
		t.Fatal(err)
	}
	if h.Type != 0x123456 || h.Subtype != 0xab || h.Info != 0x110 || h.Len() != 16 || h.Tag() != 1 {
		t.Errorf("header: got %+v", h)
	}
	k, err := Record(g["key-linked-sample"]).Key()
	if want := (KeyNotification{Subtype: 2, Tag: 1, KeyID: 0x2ffc2e5d, Aux: 1035096409}); err != nil || k != want {
		t.Errorf("key: got %+v, %v; want %+v", k, err, want)
	}
	u, err := Record(g["usb-reset-sample"]).USB()
	if want := (USBNotification{Subtype: USBDeviceReset, Tag: 4, Name: "3-7.7"}); err != nil || u != want {
		t.Errorf("usb: got %+v, %v; want %+v", u, err, want)
	}
	if n := len(g["usb-reset-sample"]); n != 22 {
		t.Errorf("usb record is %d bytes, the sample read 22", n)
	}
	b, err := Record(g["block-medium-sample"]).Block()
	if err != nil || b.Dev != 0x00800050 || b.Sector != 1677725432 || b.Subtype != 6 || BlockSubtypeName(b.Subtype) != "critical medium" {
		t.Errorf("block: got %+v, %v", b, err)
	}
	if ma, mi := SplitKernelDev(b.Dev); ma != 8 || mi != 80 {
		t.Errorf("dev 00800050 = %d:%d, want 8:80", ma, mi)
	}
	for name, id := range map[string]ObjectID{"removal-16": 1234, "removal-8": 0} {
		m, err := Record(g[name]).Removal()
		if err != nil || m.ID != id || m.Tag != 1 {
			t.Errorf("%s: got %+v, %v", name, m, err)
		}
	}
	if l, err := Record(g["loss-32"]).Loss(); err != nil || l.Count != 32 {
		t.Errorf("loss-32: got %+v, %v", l, err)
	}
}

func TestRecordsNeverTrustLength(t *testing.T) {
	key, _ := KeyNotification{Subtype: KeyUpdated, KeyID: 7}.AppendBinary(nil)
	for _, tc := range []struct {
		name   string
		in     []byte
		good   int // records yielded before the error
		errOff int // -1: no error
	}{
		{"empty", nil, 0, -1},
		{"one", key, 1, -1},
		{"two", append(append([]byte{}, key...), key...), 2, -1},
		{"short header", key[:7], 0, 0},
		{"length zero", []byte{1, 0, 0, 0, 0, 0, 0, 0}, 0, 0},
		{"length 7", []byte{1, 0, 0, 0, 7, 0, 0, 0}, 0, 0},
		{"length past end", key[:12], 0, 0},
		{"second truncated", append(append([]byte{}, key...), key[:15]...), 1, 16},
		{"length 127 in 16 bytes", append([]byte{1, 0, 0, 0, 127, 0, 0, 0}, make([]byte, 8)...), 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, errOff := 0, -1
			for r, err := range Records(tc.in) {
				if err != nil {
					var re *RecordError
					if !errors.As(err, &re) || !errors.Is(err, ErrMalformed) || !errors.Is(err, syscall.EINVAL) {
						t.Fatalf("error %v is not a RecordError/ErrMalformed/EINVAL", err)
					}
					errOff = re.Offset
					break
				}
				if len(r) < HeaderSize || len(r) != r.Header().Len() {
					t.Fatalf("yielded bad record % x", r)
				}
				n++
			}
			if n != tc.good || errOff != tc.errOff {
				t.Errorf("got %d records, error at %d; want %d, %d", n, errOff, tc.good, tc.errOff)
			}
		})
	}
}

func TestTypedDecodersRejectBadLengths(t *testing.T) {
	key, _ := KeyNotification{}.AppendBinary(nil)
	key[4] = 12 // a 12-byte key record
	if _, err := Record(key[:12]).Key(); err == nil {
		t.Error("12-byte key record accepted")
	}
	usb, _ := USBNotification{Name: "1-1"}.AppendBinary(nil)
	usb[16] = 40 // name_len past the end
	if _, err := Record(usb).USB(); err == nil {
		t.Error("USB name_len past the record accepted")
	}
	long, _ := USBNotification{Name: strings.Repeat("x", 100)}.AppendBinary(nil)
	if len(long) != USBNameOffset+USBMaxNameLen {
		t.Errorf("long USB name: record of %d bytes, want %d", len(long), USBNameOffset+USBMaxNameLen)
	}
	blk, _ := BlockNotification{Subtype: BlockAdd, Name: "loop0"}.AppendBinary(nil)
	b, err := Record(blk).Block()
	if err != nil || b.Name != "loop0" || len(blk) != 29 {
		t.Errorf("block lifecycle: %+v %v len %d", b, err, len(blk))
	}
	if _, err := Record(blk).Key(); err == nil {
		t.Error("block record decoded as key")
	}
	if _, err := (Record{0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0}).Removal(); err == nil {
		t.Error("12-byte removal accepted")
	}
}

func FuzzRecords(f *testing.F) {
	for _, b := range []string{"", "\x01\x00\x00\x02\x10\x01\x00\x00abcdabcd", "\x00\x00\x00\x01\x08\x00\x00\x00", "\x03\x00\x00\x00\x16\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x33\x2d\x37\x2e\x37"} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		for r, err := range Records(b) {
			if err != nil {
				break
			}
			if len(r) < HeaderSize || len(r) > MaxRecordSize || r.Header().Len() != len(r) {
				t.Fatalf("bad record yielded: % x", r)
			}
			total += len(r)
			switch r.Type() {
			case TypeKey:
				_, _ = r.Key()
			case TypeBlock:
				_, _ = r.Block()
			case TypeUSB:
				_, _ = r.USB()
			case TypeMeta:
				_, _ = r.Removal()
				_, _ = r.Loss()
			}
			_ = r.String()
		}
		if total > len(b) {
			t.Fatalf("records cover %d bytes of %d", total, len(b))
		}
	})
}

// TestTypedDecodersOneErrorType: a wrong type and a wrong length are the
// same kind of error, a *RecordError matching ErrMalformed and EINVAL.
func TestTypedDecodersOneErrorType(t *testing.T) {
	usb, _ := USBNotification{Name: "1-1"}.AppendBinary(nil)
	r := Record(usb)
	for name, f := range map[string]func() error{
		"key":     func() error { _, err := r.Key(); return err },
		"block":   func() error { _, err := r.Block(); return err },
		"removal": func() error { _, err := r.Removal(); return err },
		"loss":    func() error { _, err := r.Loss(); return err },
	} {
		err := f()
		var re *RecordError
		if !errors.As(err, &re) || !errors.Is(err, ErrMalformed) || !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s of a USB record: %v (%T), want a *RecordError", name, err, err)
		}
	}
}

func TestTypedStrings(t *testing.T) {
	for _, tc := range []struct {
		v    fmt.Stringer
		want string
	}{
		{KeyNotification{Subtype: KeyLinked, KeyID: 10, Aux: 11}, "key 10 linked key=11"},
		{KeyNotification{Subtype: KeyInstantiated, KeyID: 10, Aux: uint32(0xffffff82)}, "key 10 instantiated error=-126"},
		{KeyNotification{Subtype: 99, KeyID: 10}, "key 10 subtype=99"},
		{BlockNotification{Subtype: BlockErrorIO, Dev: KernelDev(7, 0), Sector: 8}, "block 7:0 io sector=8"},
		{BlockNotification{Subtype: BlockAdd, Dev: KernelDev(8, 1), Sector: 4096, Name: "sda1", TypeInfo: uint16(BlockFlagPartition >> InfoTypeInfoShift)}, "block sda1 (8:1) add size=4096 partition"},
		{USBNotification{Subtype: USBDeviceAdd, Name: "3-7.7"}, "usb 3-7.7 dev-add"},
		{Removal{Tag: 1, ID: 1234}, "removal tag=1 id=1234"},
		{Removal{Tag: 4}, "removal tag=4"},
		{Loss{Count: 12}, "loss 12 records lost"},
	} {
		if got := tc.v.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestIsWholeAndSetTag(t *testing.T) {
	k, _ := KeyNotification{Subtype: KeyUpdated, KeyID: 1}.AppendBinary(nil)
	if !IsWhole(k) || IsWhole(k[:15]) || IsWhole(append(k, 0)) || IsWhole(k[:4]) {
		t.Error("IsWhole misjudges a 16-byte key record and its cuts")
	}
	SetTag(k, 0x42)
	if r := Record(k); r.Tag() != 0x42 || r.Header().Len() != 16 || r.Subtype() != KeyUpdated {
		t.Errorf("SetTag: %v", r)
	}
}
