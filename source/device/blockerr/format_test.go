package blockerr

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/watchq/watchq/record"
)

func parseFile(t *testing.T, name string) *Format {
	t.Helper()
	f, err := os.Open("../../../testdata/device/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fm, err := ParseFormat(f)
	if err != nil {
		t.Fatal(err)
	}
	return fm
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		file, name         string
		dev, sector, error int
		rwbs, cmd          int
	}{
		{"block_rq_error.6.18.format", "block_rq_error", 8, 16, 28, 34, 44},
		{"block_rq_complete.5.10.format", "block_rq_complete", 8, 16, 28, 32, 40},
	} {
		f := parseFile(t, tc.file)
		if f.Name != tc.name || f.ID == 0 {
			t.Errorf("%s: name %q id %d", tc.file, f.Name, f.ID)
		}
		l, err := f.Layout()
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if l.Dev.Offset != tc.dev || l.Sector.Offset != tc.sector || l.Error.Offset != tc.error || l.Sector.Size != 8 || !l.Error.Signed {
			t.Errorf("%s: layout %+v", tc.file, l)
		}
		if f.Fields["rwbs"].Offset != tc.rwbs || f.Fields["cmd"].Offset != tc.cmd || f.Fields["common_pid"].Type != "int" {
			t.Errorf("%s: fields %+v", tc.file, f.Fields)
		}
	}
}

func TestParseFormatRejects(t *testing.T) {
	for name, in := range map[string]string{
		"empty":      "",
		"bad offset": "name: x\nformat:\n\tfield:int error;\toffset:x;\tsize:4;\tsigned:1;\n",
		"no size":    "name: x\nformat:\n\tfield:int error;\toffset:4;\n",
		"bad id":     "name: x\nID: y\n",
	} {
		if _, err := ParseFormat(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestLayoutRejects(t *testing.T) {
	base := "name: block_rq_error\nformat:\n\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;\n"
	for name, in := range map[string]string{
		"no error":  base,
		"odd size":  base + "\tfield:long error;\toffset:24;\tsize:2;\tsigned:1;\n",
		"unaligned": base + "\tfield:int error;\toffset:26;\tsize:4;\tsigned:1;\n",
	} {
		f, err := ParseFormat(strings.NewReader(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := f.Layout(); err == nil {
			t.Errorf("%s: Layout accepted it", name)
		}
	}
}

func TestSubtype(t *testing.T) {
	for errno, want := range map[int32]uint8{
		errETIMEDOUT: record.BlockErrorTimeout, errENOSPC: record.BlockErrorNoSpace,
		errENOLINK: record.BlockErrorRecoverableTransport, errEREMOTEIO: record.BlockErrorCriticalTarget,
		errEBADE: record.BlockErrorCriticalNexus, errENODATA: record.BlockErrorCriticalMedium,
		errEILSEQ: record.BlockErrorProtection, errENOMEM: record.BlockErrorKernelResource,
		errEBUSY: record.BlockErrorDeviceResource, errEIO: record.BlockErrorIO,
	} {
		for _, e := range []int32{errno, -errno} {
			if got, known := Subtype(e); got != want || !known {
				t.Errorf("Subtype(%d) = %d, %v; want %d, true", e, got, known, want)
			}
		}
	}
	if got, known := Subtype(-int32(syscall.EOPNOTSUPP)); got != record.BlockErrorIO || known {
		t.Errorf("Subtype(-EOPNOTSUPP) = %d, %v", got, known)
	}
}
