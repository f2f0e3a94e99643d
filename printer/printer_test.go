package printer

import (
	"bytes"
	"strings"
	"testing"

	"github.com/watchq/watchq/record"
)

func TestSampleFormat(t *testing.T) {
	var buf []byte
	buf, _ = record.KeyNotification{Subtype: record.KeyLinked, Tag: 1, KeyID: 0x2ffc2e5d, Aux: 1035096409}.AppendBinary(buf)
	buf, _ = record.USBNotification{Subtype: record.USBDeviceReset, Tag: 4, Name: "3-7.7"}.AppendBinary(buf)
	buf, _ = record.BlockNotification{Subtype: record.BlockErrorCriticalMedium, Tag: 4, Dev: 0x00800050, Sector: 0x64000ef8}.AppendBinary(buf)
	buf, _ = record.Loss{}.AppendBinary(buf)
	buf, _ = record.Removal{Tag: 2, ID: 5}.AppendBinary(buf)
	var out bytes.Buffer
	if err := New(&out, false).Read(buf); err != nil {
		t.Fatal(err)
	}
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
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	if err := New(&out, true).Read(buf); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(out.String(), "\n"); lines != 5 || !strings.Contains(out.String(), `"event":"linked"`) {
		t.Errorf("json:\n%s", out.String())
	}
	out.Reset()
	if err := New(&out, false).Read(buf[:20]); err == nil {
		t.Error("truncated buffer printed without error")
	}
}
