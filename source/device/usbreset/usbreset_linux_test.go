//go:build linux

package usbreset

import (
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// TestNoUSBReason checks the reasons Open gives for a kernel without
// usb_reset_device, against fake /proc/config.gz and sysfs trees.
func TestNoUSBReason(t *testing.T) {
	gz := func(t *testing.T, dir, config string) string {
		p := filepath.Join(dir, "config.gz")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		z := gzip.NewWriter(f)
		z.Write([]byte(config))
		if err := z.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	for _, tc := range []struct {
		name, config string
		sysDirs      []string
		want         string
	}{
		{"not set", "CONFIG_USB_SUPPORT=y\n# CONFIG_USB is not set\n", nil, "CONFIG_USB is not set"},
		{"module not loaded", "CONFIG_USB=m\n", nil, "CONFIG_USB=m and the usbcore module is not loaded"},
		{"module without BTF", "CONFIG_USB=m\n", []string{"module/usbcore", "bus/usb"}, "usbcore is loaded but has no BTF"},
		{"no config, no bus", "", nil, "bus/usb does not exist"},
		{"no config, bus", "", []string{"bus/usb"}, "lacks usb_reset_device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			config := filepath.Join(dir, "absent.gz")
			if tc.config != "" {
				config = gz(t, dir, tc.config)
			}
			sys := filepath.Join(dir, "sys")
			for _, d := range tc.sysDirs {
				if err := os.MkdirAll(filepath.Join(sys, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if got := noUSBReason(config, sys); !strings.Contains(got, tc.want) {
				t.Errorf("noUSBReason = %q, want it to say %q", got, tc.want)
			}
		})
	}
}

// TestNotSupportedTransient: the kernel's refusal matches
// ebpf.ErrNotSupported; running out of descriptors or memory does not.
func TestNotSupportedTransient(t *testing.T) {
	for err, want := range map[error]bool{
		syscall.EPERM:  true,
		syscall.EINVAL: true,
		fmt.Errorf("map create: %w", syscall.EMFILE): false,
		syscall.ENOMEM: false,
	} {
		got := notSupported(err)
		if errors.Is(got, ebpf.ErrNotSupported) != want || !errors.Is(got, err) {
			t.Errorf("notSupported(%v) = %v; matches ErrNotSupported: %v, want %v", err, got, !want, want)
		}
	}
}
