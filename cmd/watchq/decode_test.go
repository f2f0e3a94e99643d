package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/watchq/watchq/record"
)

var update = flag.Bool("update", false, "rewrite testdata/cli's captures and expected outputs")

// cliData is testdata/cli at the repository root.
var cliData = filepath.Join("..", "..", "testdata", "cli")

// tagged returns rec with its watch tag set, as delivery stamps it.
func tagged(rec []byte, tag uint8) []byte {
	info := binary.NativeEndian.Uint32(rec[4:])
	binary.NativeEndian.PutUint32(rec[4:], info&^record.InfoID|uint32(tag)<<record.InfoIDShift)
	return rec
}

func keyRec(sub uint8, key, aux uint32, tag uint8) []byte {
	return tagged(must(record.KeyNotification{Subtype: sub, KeyID: key, Aux: aux}.AppendBinary(nil)), tag)
}

// The kernel documentation's and ver #2 patches' reference examples.
var (
	refKeyLinked = func() []byte { return keyRec(record.KeyLinked, 0x2ffc2e5d, 1035096409, 1) }
	refUSBReset  = func() []byte {
		return tagged(must(record.USBNotification{Subtype: record.USBDeviceReset, Name: "3-7.7"}.AppendBinary(nil)), 4)
	}
	refBlockMedium = func() []byte {
		return tagged(must(record.BlockNotification{Subtype: record.BlockErrorCriticalMedium, Dev: 0x00800050, Sector: 0x64000ef8}.AppendBinary(nil)), 4)
	}
)

// captures are the golden captures, built from the engine's typed records.
func captures() map[string][]byte {
	cat := func(recs ...[]byte) []byte {
		var b []byte
		for _, r := range recs {
			b = append(b, r...)
		}
		return b
	}
	var mixed [][]byte
	for sub := record.KeyInstantiated; sub <= record.KeySetattr; sub++ {
		mixed = append(mixed, keyRec(sub, 0x1d0b7c52, uint32(sub)*7, 1))
	}
	for sub := record.KeyInstantiated; sub <= record.KeySetattr; sub++ {
		mixed = append(mixed, keyRec(sub, 0x3b1a9e01, 0x2ffc2e5d, 2))
	}
	mixed = append(mixed,
		must(record.Removal{Tag: 1, ID: 1234}.AppendBinary(nil)),
		must(record.Removal{Tag: 4}.AppendBinary(nil)),
		must(record.Loss{}.AppendBinary(nil)),
		must(record.Loss{Count: 32}.AppendBinary(nil)),
		tagged(must(record.BlockNotification{Subtype: record.BlockAdd, TypeInfo: uint16(record.BlockFlagPartition >> 16), Dev: record.KernelDev(8, 1), Sector: 0x1000, Name: "sda1"}.AppendBinary(nil)), 4),
		tagged(must(record.BlockNotification{Subtype: record.BlockErrorTimeout, Dev: record.KernelDev(7, 0), Sector: 8}.AppendBinary(nil)), 4),
		tagged(must(record.USBNotification{Subtype: record.USBDeviceAdd, Name: "usb3"}.AppendBinary(nil)), 4),
		tagged(must(record.USBNotification{Subtype: record.USBDeviceRemove, Name: "1-1"}.AppendBinary(nil)), 4),
		pubRec(0x800001, "hello"),
		refBlockMedium(),
		refUSBReset(),
	)
	hdr := func(typ record.Type, length int) []byte {
		b := make([]byte, 8)
		record.Header{Type: typ, Info: uint32(length)}.Put(b)
		return b
	}
	return map[string][]byte{
		"key-linked":   refKeyLinked(),
		"usb-reset":    refUSBReset(),
		"block-medium": refBlockMedium(),
		"mixed":        cat(mixed...),
		// Malformed streams: good records, then a bad one.
		"bad-short-header": cat(refKeyLinked(), refUSBReset(), []byte{1, 0, 0, 2, 16}),
		"bad-length-zero":  cat(refKeyLinked(), hdr(record.TypeKey, 0), refKeyLinked()),
		"bad-past-end":     cat(refKeyLinked(), refBlockMedium(), hdr(record.TypeUSB, 40), []byte("3-7.7 and then the capture ends")[:12]),
	}
}

func pubRec(typ record.Type, payload string) []byte {
	b := make([]byte, record.HeaderSize+len(payload))
	record.Header{Type: typ, Info: uint32(len(b))}.Put(b)
	copy(b[record.HeaderSize:], payload)
	return b
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestCaptures checks the committed captures against the typed records
// they are built from, and the reference examples against the
// independently hand-made vectors of testdata/golden/records.txt.
func TestCaptures(t *testing.T) {
	for name, b := range captures() {
		path := filepath.Join(cliData, name+".bin")
		if *update {
			if err := os.MkdirAll(cliData, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./cmd/watchq -run TestCaptures -update)", err)
		}
		if string(got) != string(b) {
			t.Errorf("%s is stale: run go test ./cmd/watchq -run TestCaptures -update", path)
		}
	}
	vectors := goldenVectors(t)
	for name, vec := range map[string]string{"key-linked": "key-linked-sample", "usb-reset": "usb-reset-sample", "block-medium": "block-medium-sample"} {
		if got := hex.EncodeToString(captures()[name]); got != vectors[vec] {
			t.Errorf("%s = %s, records.txt's %s = %s", name, got, vec, vectors[vec])
		}
	}
}

// goldenVectors reads testdata/golden/records.txt: name, hex, comment.
func goldenVectors(t *testing.T) map[string]string {
	f, err := os.Open(filepath.Join("..", "..", "testdata", "golden", "records.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && !strings.HasPrefix(fs[0], "#") {
			m[fs[0]] = fs[1]
		}
	}
	return m
}

// TestDecodeReference decodes the reference examples and checks the lines
// the kernel documentation and the ver #2 patches show.
func TestDecodeReference(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string
	}{
		{"key-linked", "read() = 16\nNOTIFY[000]: ty=000001 sy=02 i=00000110\nKEY 2ffc2e5d change=2[linked] aux=1035096409\n"},
		{"usb-reset", "read() = 22\nNOTIFY[000]: ty=000003 sy=02 i=00000416\nUSB 3-7.7 dev-reset e=0 r=0\n"},
		{"block-medium", "read() = 24\nNOTIFY[000]: ty=000002 sy=06 i=00000418\nBLOCK 00800050 e=6[critical medium] s=64000ef8\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, nil, "decode", filepath.Join(cliData, tc.name+".bin"))
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			if r.stdout != tc.want {
				t.Errorf("got\n%s\nwant\n%s", r.stdout, tc.want)
			}
		})
	}
}

// TestDecodeGolden decodes every capture, from a file and from standard
// input, as text and as JSON, against the expected outputs in
// testdata/cli. Malformed captures print everything before the bad record,
// then the error with its offset, and exit 1.
func TestDecodeGolden(t *testing.T) {
	wantErr := map[string]string{
		"bad-short-header": "malformed record at offset 38 (0x26): 5 bytes left, a record header needs 8",
		"bad-length-zero":  "malformed record at offset 16 (0x10): length 0 is below the header size 8",
		"bad-past-end":     "malformed record at offset 40 (0x28): length 40 runs past the end of the input (20 bytes left)",
	}
	for name := range captures() {
		for _, mode := range []string{"txt", "json", "line", "keyctl"} {
			t.Run(name+"."+mode, func(t *testing.T) {
				bin := filepath.Join(cliData, name+".bin")
				args := []string{"decode"}
				switch mode {
				case "json":
					args = append(args, "--json")
				case "line", "keyctl":
					args = append(args, "--format", mode)
				}
				r := run(t, nil, append(args, bin)...)
				data, err := os.ReadFile(bin)
				if err != nil {
					t.Fatal(err)
				}
				rs := run(t, data, append(args, "-")...)
				r.stdout, rs.stdout = untimed(r.stdout), untimed(rs.stdout)
				if rs.stdout != r.stdout || rs.code != r.code {
					t.Errorf("standard input gave exit %d and\n%s\nfile gave exit %d and\n%s", rs.code, rs.stdout, r.code, r.stdout)
				}
				expected := filepath.Join(cliData, name+"."+mode)
				if *update {
					if err := os.WriteFile(expected, []byte(r.stdout), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(expected)
				if err != nil {
					t.Fatal(err)
				}
				if r.stdout != string(want) {
					t.Errorf("stdout:\n%s\nwant (%s):\n%s", r.stdout, expected, want)
				}
				if e, bad := wantErr[name]; bad {
					if r.code != 1 {
						t.Errorf("exit status %d, want 1", r.code)
					}
					if w := "watchq: decode " + bin + ": " + e + "\n"; r.stderr != w {
						t.Errorf("stderr %q, want %q", r.stderr, w)
					}
					if w := "watchq: decode standard input: " + e + "\n"; rs.stderr != w {
						t.Errorf("stdin stderr %q, want %q", rs.stderr, w)
					}
					return
				}
				if r.code != 0 || r.stderr != "" {
					t.Errorf("exit %d, stderr %q", r.code, r.stderr)
				}
				if mode == "json" {
					checkJSONLines(t, r.stdout)
				}
			})
		}
	}
}

// checkJSONLines checks every line is one JSON object with a type.
func checkJSONLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if _, ok := m["type"]; !ok {
			t.Errorf("line %q has no type", l)
		}
		objs = append(objs, m)
	}
	return objs
}

// TestDecodeMixedReads checks the grouping into 433-byte reads: the mixed
// capture is 448 bytes, so the sample would have read it in two reads.
func TestDecodeMixedReads(t *testing.T) {
	r := run(t, nil, "decode", filepath.Join(cliData, "mixed.bin"))
	var reads []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "read() = ") {
			reads = append(reads, l)
		}
	}
	if len(reads) != 2 || reads[0] != "read() = 426" || reads[1] != "read() = 22" {
		t.Errorf("reads %q, want [read() = 426, read() = 22]", reads)
	}
	r = run(t, nil, "decode", "--read-size", "4096", filepath.Join(cliData, "mixed.bin"))
	if !strings.HasPrefix(r.stdout, "read() = 448\n") || strings.Count(r.stdout, "read()") != 1 {
		t.Errorf("--read-size 4096: got\n%s", r.stdout)
	}
}

// TestDecodeErrors checks the command's own failures.
func TestDecodeErrors(t *testing.T) {
	r := run(t, nil, "decode", filepath.Join(t.TempDir(), "missing.bin"))
	if r.code != 1 || !strings.HasPrefix(r.stderr, "watchq: decode: open ") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("missing file: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(t, nil, "decode", "a", "b")
	if r.code != 2 || !strings.HasPrefix(r.stderr, "watchq: ") {
		t.Errorf("two files: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(t, nil, "decode", "--read-size", "7", "-")
	if r.code != 2 {
		t.Errorf("--read-size 7: exit %d, stderr %q", r.code, r.stderr)
	}
	// A read size is bounded by the largest read a notification pipe can
	// return (its 512 notes of 128 bytes); beyond it the command used to
	// die out of memory (10^12) or panic (2^63-1) making the buffer.
	for _, size := range []string{"65537", "1000000000000", "9223372036854775807"} {
		r = run(t, nil, "decode", "--read-size", size, filepath.Join(cliData, "mixed.bin"))
		if want := "watchq: --read-size " + size + ": must be 8..65536 (no read of a notification pipe returns more than its 512 notes of 128 bytes)\n"; r.code != 2 || !strings.HasPrefix(r.stderr, want) || r.stdout != "" {
			t.Errorf("--read-size %s: exit %d, stdout %q, stderr %q, want exit 2 and %q", size, r.code, r.stdout, r.stderr, want)
		}
	}
	r = run(t, nil, "decode", "--read-size", "65536", filepath.Join(cliData, "mixed.bin"))
	if r.code != 0 || !strings.HasPrefix(r.stdout, "read() = 448\n") {
		t.Errorf("--read-size 65536: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, "decode", "--read-size", "20", filepath.Join(cliData, "mixed.bin"))
	if want := "watchq: decode " + filepath.Join(cliData, "mixed.bin") + ": record at offset 296 (0x128) is 28 bytes, more than --read-size 20 (a read would fail with ENOBUFS)\n"; r.code != 1 || r.stderr != want {
		t.Errorf("--read-size 20: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
	r = run(t, nil, "decode")
	if r.code != 0 || r.stdout != "" {
		t.Errorf("empty input: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// timestamps match the time the line and json formats print.
var timestamps = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) |"ts":"[^"]*"`)

// untimed replaces printed times with TIME, so golden files compare.
func untimed(s string) string {
	return timestamps.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, `"ts"`) {
			return `"ts":"TIME"`
		}
		return "TIME "
	})
}
