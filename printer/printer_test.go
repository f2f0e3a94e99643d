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

func TestMountSuperblockFormat(t *testing.T) {
	var buf []byte
	buf, _ = record.MountNotification{Subtype: record.MountNew, Tag: 2, TriggeredOn: 0x8000003d, Aux: 0x80000457}.AppendBinary(buf)
	buf, _ = record.MountNotification{Subtype: record.MountReadonly, Tag: 2, Flags: record.MountFlagInSubtree | record.MountFlagNowRO, TriggeredOn: 0x80000457}.AppendBinary(buf)
	buf, _ = record.SuperblockNotification{Subtype: record.SuperblockError, Tag: 3, SBID: record.KernelDev(7, 0), ErrorNumber: 5, ErrorCookie: 1}.AppendBinary(buf)
	buf, _ = record.SuperblockNotification{Subtype: record.SuperblockReadonly, Tag: 3, Flags: record.SuperblockFlagNowRO, SBID: record.KernelDev(7, 0)}.AppendBinary(buf)
	var out bytes.Buffer
	p := New(&out, false)
	p.SetMountResolver(func(id uint64) (string, bool) {
		switch id {
		case 0x8000003d:
			return "/", true
		case 0x80000457:
			return "/mnt/my disk", true
		}
		return "", false
	})
	if err := p.Read(buf); err != nil {
		t.Fatal(err)
	}
	// The sample's MOUNT and SUPER lines (watch_mount/watch_sb patches),
	// then watchq's additions: mount points, errno and cookie.
	want := `read() = 88
NOTIFY[000]: ty=000004 sy=00 i=00000218
MOUNT 8000003d change=0[new_mount] aux=80000457 on=/ mnt="/mnt/my disk"
NOTIFY[018]: ty=000004 sy=03 i=00030218
MOUNT 80000457 change=3[readonly] aux=0 (ro) on="/mnt/my disk"
NOTIFY[030]: ty=000005 sy=01 i=00000318
SUPER 00700000 change=1[error] e=5[EIO] c=1
NOTIFY[048]: ty=000005 sy=00 i=00010310
SUPER 00700000 change=0[readonly] (ro)
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	p = New(&out, true)
	p.SetMountResolver(func(id uint64) (string, bool) { return "/x", id == 0x80000457 })
	if err := p.Read(buf); err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"type":"mount","ty":4,"sy":0,"info":536,"tag":2,"len":24,"event":"new_mount","mount_id":2147483709,"aux_mount_id":2147484759,"aux_mount_point":"/x"}
{"type":"mount","ty":4,"sy":3,"info":197144,"tag":2,"len":24,"event":"readonly","mount_id":2147484759,"mount_point":"/x","flags":["in_subtree","now_ro"]}
{"type":"superblock","ty":5,"sy":1,"info":792,"tag":3,"len":24,"event":"error","dev":"7:0","sb_id":7340032,"errno":5,"error":"EIO","cookie":1}
{"type":"superblock","ty":5,"sy":0,"info":66320,"tag":3,"len":16,"event":"readonly","dev":"7:0","flags":["now_ro"],"sb_id":7340032}
`
	if out.String() != wantJSON {
		t.Errorf("json got:\n%s\nwant:\n%s", out.String(), wantJSON)
	}
}
