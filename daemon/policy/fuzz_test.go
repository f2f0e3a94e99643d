package policy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
)

// probeCreds are the clients FuzzConfig asks the rules about.
var probeCreds = []*watchq.Cred{
	{UID: 0},
	{UID: 50, GID: 50, Groups: []uint32{4}},
	{UID: 1001, GID: 1001},
	{UID: 1002, GID: 4},
	{UID: 2000, GID: 2000, Label: "unconfined"},
	{UID: 2001, GID: 2001, Label: "system_u:system_r:smartd_t:s0"},
}

var numberRE = regexp.MustCompile(`0[xX][0-9a-fA-F]+|[0-9]+`)

// probeTypes are publisher types worth asking about for conf: a few fixed
// ones and every number in conf, with its neighbours.
func probeTypes(conf string) []record.Type {
	ts := []record.Type{record.TypeUserFirst, record.TypeUserFirst + 1, 0x800100, 0x8000ff, record.TypeUserLast}
	for _, m := range numberRE.FindAllString(conf, 32) {
		n, err := strconv.ParseUint(m, 0, 32)
		if err != nil {
			continue
		}
		for _, d := range []int64{-1, 0, 1} {
			if t, err := record.ParsePublisherType(uint64(int64(n) + d)); err == nil {
				ts = append(ts, t)
			}
		}
	}
	return ts
}

// lines splits conf as bufio.ScanLines does.
func lines(conf string) []string {
	if conf == "" {
		return nil
	}
	ls := strings.Split(conf, "\n")
	if ls[len(ls)-1] == "" {
		ls = ls[:len(ls)-1]
	}
	for i, l := range ls {
		ls[i] = strings.TrimSuffix(l, "\r")
	}
	return ls
}

// configSeeds are FuzzConfig's seeds, committed as well as
// testdata/fuzz/FuzzConfig/<name>: every subject and grant keyword and
// every watch item, comments, blank lines, tabs and CRLF, and each kind
// of error.
var configSeeds = []struct{ name, conf string }{
	{"man-page-example", `# Example watchqd.conf(5), the one in the man page.
user=root       watch=devices,0x800000-0xffffff publish=0x800000-0xffffff
group=adm       watch=devices
user=smartmon   watch=block-errors
user=backup     publish=0x800100
*               watch=0x800100
`},
	{"user-numeric", "user=1001 watch=0x800001 publish=0x800001-0x800002\n"},
	{"group-named", "group=adm watch=usb,block-lifecycle\n"},
	{"label", "label=system_u:system_r:smartd_t:s0 watch=block-errors\n"},
	{"everyone", "* watch=usb\n"},
	{"mount-classes", "* watch=mounts\ngroup=adm watch=fs-errors,mounts,devices\n"},
	{"comments-blank", "# only a comment\n\n   \t\nuser=1001 watch=0x800100 # trailing\n"},
	{"tab-crlf", "group=4\twatch=block-errors,usb\r\nuser=0 watch=devices\r\n"},
	{"no-final-newline", "user=root watch=devices"},
	{"unknown-user", "user=nobodyknows watch=usb\n"},
	{"no-grant", "user=root\n"},
	{"empty-range", "user=root publish=0x800002-0x800001\n"},
	{"not-publisher-type", "user=root watch=0x12\n"},
	{"unknown-watch-item", "* watch=floppy\n"},
	{"unknown-grant", "user=root listen=usb\n"},
	{"bad-subject", "bogus watch=usb\n"},
	{"empty-value", "user= watch=usb\n* publish=\n"},
	{"error-on-line-3", "* watch=usb\n\nuser=root watch=devices,floppy\n"},
}

// FuzzConfig feeds arbitrary watchqd.conf(5) text to Parse. It must never
// panic; the file is one rule per line with no context between lines, and
// grants add up, so:
//
//   - the file fails exactly when one of its lines fails on its own, with
//     the first such line's number ("policy: NAME:LINE: ") and the same
//     reason, which is never empty;
//   - otherwise every client's decisions (device classes, watching and
//     publishing each publisher type) are the union of what each line
//     alone grants, and the number of rules is the number of lines that
//     hold one.
func FuzzConfig(f *testing.F) {
	for _, s := range configSeeds {
		f.Add(s.conf)
	}
	f.Fuzz(func(t *testing.T, conf string) {
		const name = "fuzz.conf"
		rs, err := Parse(strings.NewReader(conf), name, stubLookup)
		ls := lines(conf)
		if len(conf) > 60000 {
			// bufio.Scanner refuses lines over 64 KiB: check the error's
			// form only.
			if err != nil && !strings.HasPrefix(err.Error(), "policy: "+name+":") {
				t.Fatalf("error %q does not start with the file name", err)
			}
			return
		}
		var (
			singles []*Rules
			nrules  int
		)
		for i, l := range ls {
			r1, err1 := Parse(strings.NewReader(l+"\n"), name, stubLookup)
			if err1 != nil {
				prefix := fmt.Sprintf("policy: %s:%d: ", name, i+1)
				reason, ok := strings.CutPrefix(err1.Error(), fmt.Sprintf("policy: %s:1: ", name))
				if !ok || reason == "" {
					t.Fatalf("line %q alone: error %q, want %q and a reason", l, err1, fmt.Sprintf("policy: %s:1: ", name))
				}
				if err == nil || err.Error() != prefix+reason {
					t.Fatalf("line %d %q fails alone with %q; the file: %v, want %q", i+1, l, err1, err, prefix+reason)
				}
				return
			}
			singles = append(singles, r1)
			nrules += r1.Len()
		}
		if err != nil {
			t.Fatalf("every line parses alone, the file does not: %v", err)
		}
		if rs.Len() != nrules {
			t.Fatalf("%d rules, the lines alone hold %d", rs.Len(), nrules)
		}
		p := New(rs)
		types := probeTypes(conf)
		for _, c := range probeCreds {
			var dev protocol.Sources
			for _, r1 := range singles {
				dev |= r1.Devices(c)
			}
			if got := rs.Devices(c); got != dev {
				t.Fatalf("uid %d: devices %v, the lines alone grant %v", c.UID, got, dev)
			}
			for _, ty := range types {
				var w, pub bool
				for _, r1 := range singles {
					w = w || r1.MayWatch(c, ty)
					pub = pub || r1.MayPublish(c, ty)
				}
				if rs.MayWatch(c, ty) != w || rs.MayPublish(c, ty) != pub {
					t.Fatalf("uid %d type %#x: watch %v publish %v, the lines alone grant %v %v",
						c.UID, uint32(ty), rs.MayWatch(c, ty), rs.MayPublish(c, ty), w, pub)
				}
				if e := p.PublishAllowed(c, ty); (e == nil) != pub {
					t.Fatalf("uid %d type %#x: PublishAllowed %v, MayPublish %v", c.UID, uint32(ty), e, pub)
				}
				if e := p.WatchAllowed(c, watchq.Object{Kind: watchq.KindPublisher, ID: record.ObjectID(ty)}); (e == nil) != w {
					t.Fatalf("uid %d type %#x: WatchAllowed %v, MayWatch %v", c.UID, uint32(ty), e, w)
				}
			}
		}
	})
}
