//go:build linux

package usbreset

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
)

func TestDecodeName(t *testing.T) {
	mk := func(bus uint32, path string) []byte {
		b := make([]byte, eventSize)
		b[0], b[1] = byte(bus), byte(bus>>8)
		copy(b[8:], path)
		return b
	}
	for _, tc := range []struct {
		rec  []byte
		want string
	}{
		{mk(3, "7.7"), "3-7.7"},
		{mk(3, "0"), "usb3"},
		{mk(1, "1.2.3.4.5.6.7"), "1-1.2.3.4.5.6.7"},
		{mk(12, "1234567890123456"), "12-1234567890123456"},
	} {
		got, err := decodeName(tc.rec)
		if err != nil || got != tc.want {
			t.Errorf("decodeName = %q, %v; want %q", got, err, tc.want)
		}
	}
	if _, err := decodeName(make([]byte, 4)); err == nil {
		t.Error("short record accepted")
	}
	if _, err := decodeName(mk(1, "")); err == nil {
		t.Error("empty devpath accepted")
	}
}

// TestOpen documents what this kernel allows: either the fexit program
// attaches, or Open says why not with an error wrapping ErrNotSupported.
func TestOpen(t *testing.T) {
	tr, err := Open()
	if err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			t.Fatalf("Open = %v, want success or ErrNotSupported", err)
		}
		t.Logf("USB reset unsupported here: %v", err)
		return
	}
	defer tr.Close()
	if n, err := tr.Drops(); err != nil || n != 0 {
		t.Fatalf("Drops = %d, %v", n, err)
	}
}
