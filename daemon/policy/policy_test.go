package policy

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
)

func stubLookup(kind, name string) (uint32, error) {
	ids := map[string]uint32{"user/root": 0, "group/adm": 4, "user/smartmon": 1001, "user/backup": 1002}
	if id, ok := ids[kind+"/"+name]; ok {
		return id, nil
	}
	return 0, errors.New("no such " + kind)
}

func rec(t record.Type, sub uint8) record.Record {
	b := make([]byte, 8)
	record.Header{Type: t, Subtype: sub, Info: 8}.Put(b)
	return b
}

// TestExampleConfig: the man page's example parses and means what it says.
func TestExampleConfig(t *testing.T) {
	f, err := os.Open("../../testdata/daemon/watchqd.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs, err := Parse(f, "watchqd.conf", stubLookup)
	if err != nil {
		t.Fatal(err)
	}
	p := New(rs)
	root, adm := &watchq.Cred{UID: 0}, &watchq.Cred{UID: 50, Groups: []uint32{4}}
	smart, backup, other := &watchq.Cred{UID: 1001}, &watchq.Cred{UID: 1002}, &watchq.Cred{UID: 2000}
	dev := watchq.Object{Kind: watchq.KindDevices}
	for _, c := range []*watchq.Cred{root, adm, smart} {
		if err := p.WatchAllowed(c, dev); err != nil {
			t.Errorf("%v: %v", c, err)
		}
	}
	if err := p.WatchAllowed(other, dev); !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "uid 2000") {
		t.Errorf("other: %v", err)
	}
	if p.Devices(smart) != protocol.SourceBlockErrors || p.Devices(adm) != protocol.SourceDevices {
		t.Errorf("grants: smart %v adm %v", p.Devices(smart), p.Devices(adm))
	}
	if p.PostAllowed(smart, watchq.SystemCred, rec(record.TypeBlock, record.BlockErrorIO)) != nil ||
		p.PostAllowed(smart, watchq.SystemCred, rec(record.TypeBlock, record.BlockAdd)) == nil ||
		p.PostAllowed(smart, watchq.SystemCred, rec(record.TypeUSB, record.USBDeviceAdd)) == nil {
		t.Error("smartmon's device classes")
	}
	pub := watchq.Object{Kind: watchq.KindPublisher, ID: 0x800100}
	if p.WatchAllowed(other, pub) != nil || p.PublishAllowed(backup, 0x800100) != nil || p.PublishAllowed(other, 0x800100) == nil {
		t.Error("publisher grants")
	}
	if p.PostAllowed(other, backup, rec(0x800100, 0)) != nil || p.PostAllowed(other, other, rec(0x800100, 0)) == nil ||
		p.PostAllowed(other, backup, rec(0x800101, 0)) == nil {
		t.Error("publisher post decisions")
	}
	if l := p.Limits(other); l.Queues != 16 || l.Pages != 1024 || l.Watches != DefaultLimits().Watches {
		t.Errorf("limits of everyone: %v", l)
	}
	if l := p.Limits(adm); l.Queues != 256 || l.Pages != 16384 || l.Watches != 4096 {
		t.Errorf("limits of adm: %v", l)
	}
	if n := testing.AllocsPerRun(100, func() { p.PostAllowed(smart, watchq.SystemCred, rec(record.TypeUSB, 0)) }); n > 1 {
		t.Errorf("PostAllowed allocates %v times", n)
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"user=nobodyknows watch=usb", "user=root", "user=root watch=floppy", "user=root watch=0x12",
		"user=root publish=0x800002-0x800001", "user=root listen=usb", "bogus watch=usb", "user= watch=usb",
	} {
		if _, err := Parse(strings.NewReader(in), "t", stubLookup); err == nil || !strings.Contains(err.Error(), "t:1:") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// TestLimits: limits lines raise or lower each limit for their subjects
// (the largest matching value wins; root and everyone else start from
// their own defaults), and values above the ceilings, unknown keys and
// repeats reject the file.
func TestLimits(t *testing.T) {
	in := `limits * queues=8 pages=512
limits group=adm queues=100 watches=5000
limits user=smartmon queues=4 publish-rate=10 publish-burst=20
limits user=root connections=1000
`
	rs, err := Parse(strings.NewReader(in), "t", stubLookup)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Len() != 4 {
		t.Errorf("Len = %d, want 4", rs.Len())
	}
	p := New(rs)
	d, r := DefaultLimits(), RootLimits()
	for _, c := range []struct {
		who  *watchq.Cred
		want Limits
	}{
		{&watchq.Cred{UID: 2000}, Limits{Connections: d.Connections, Queues: 8, Pages: 512, Watches: d.Watches, PublishRate: d.PublishRate, PublishBurst: d.PublishBurst}},
		{&watchq.Cred{UID: 50, Groups: []uint32{4}}, Limits{Connections: d.Connections, Queues: 100, Pages: 512, Watches: 5000, PublishRate: d.PublishRate, PublishBurst: d.PublishBurst}},
		{&watchq.Cred{UID: 1001}, Limits{Connections: d.Connections, Queues: 8, Pages: 512, Watches: d.Watches, PublishRate: 10, PublishBurst: 20}},
		{&watchq.Cred{UID: 0}, Limits{Connections: 1000, Queues: 8, Pages: 512, Watches: r.Watches, PublishRate: r.PublishRate, PublishBurst: r.PublishBurst}},
	} {
		if got := p.Limits(c.who); got != c.want {
			t.Errorf("%v: %v, want %v", c.who, got, c.want)
		}
	}
	empty, _ := Parse(strings.NewReader(""), "e", stubLookup)
	if New(empty).Limits(&watchq.Cred{UID: 7}) != d || New(empty).Limits(&watchq.Cred{UID: 0}) != r {
		t.Error("defaults without limits lines")
	}
	m := MaxLimits()
	for _, l := range []Limits{d, r} {
		if l.Connections > m.Connections || l.Queues > m.Queues || l.Pages > m.Pages || l.Watches > m.Watches ||
			l.PublishRate > m.PublishRate || l.PublishBurst > m.PublishBurst || l.Connections == 0 || l.Queues == 0 {
			t.Errorf("default %v against ceiling %v", l, m)
		}
	}
	for _, bad := range []string{
		"limits", "limits *", "limits * queues", "limits * queues=", "limits * queues=-1", "limits * queues=0x10",
		"limits * queues=1 queues=2", "limits * fds=3", "limits * pages=999999999", "limits bogus queues=1",
		"limits * queues=unlimited", "limits user=nobodyknows queues=1",
	} {
		if _, err := Parse(strings.NewReader(bad), "t", stubLookup); err == nil || !strings.Contains(err.Error(), "t:1:") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
