package policy

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// TestMountClasses: watch=mounts and watch=fs-errors grant mount and
// superblock watches and their records, each on its own; the watched
// directory's search bits still apply; a reload that takes the class away
// stops the records.
func TestMountClasses(t *testing.T) {
	rs, err := Parse(strings.NewReader("user=1001 watch=mounts\nuser=1002 watch=fs-errors\ngroup=4 watch=mounts,fs-errors\n"), "t.conf", stubLookup)
	if err != nil {
		t.Fatal(err)
	}
	p := New(rs)
	mnt := watchq.Object{Kind: watchq.KindMount, ID: 7, UID: 0, GID: 0, Mode: 0o444}
	sb := watchq.Object{Kind: watchq.KindSuperblock, ID: 8, UID: 0, GID: 0, Mode: 0o444}
	closed := watchq.Object{Kind: watchq.KindMount, ID: 9, UID: 0, GID: 0, Mode: 0o400}
	m, f, both, none := &watchq.Cred{UID: 1001}, &watchq.Cred{UID: 1002}, &watchq.Cred{UID: 50, Groups: []uint32{4}}, &watchq.Cred{UID: 2000}
	for _, tc := range []struct {
		c    *watchq.Cred
		obj  watchq.Object
		ok   bool
		want string
	}{
		{m, mnt, true, ""},
		{m, sb, false, "not granted watch=fs-errors by t.conf"},
		{f, sb, true, ""},
		{f, mnt, false, "not granted watch=mounts by t.conf"},
		{both, mnt, true, ""},
		{both, sb, true, ""},
		{none, mnt, false, "uid 2000 (gid 0, pid 0) is not granted watch=mounts"},
		{m, closed, false, "may not watch mount 9"},
	} {
		err := p.WatchAllowed(tc.c, tc.obj)
		if tc.ok != (err == nil) || (!tc.ok && (!errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), tc.want))) {
			t.Errorf("uid %d %v: %v, want ok=%v %q", tc.c.UID, tc.obj.Kind, err, tc.ok, tc.want)
		}
	}
	mrec, srec := rec(record.TypeMount, 0), rec(record.TypeSuperblock, 1)
	if p.PostAllowed(m, watchq.SystemCred, mrec) != nil || p.PostAllowed(m, watchq.SystemCred, srec) == nil {
		t.Error("mounts grant: mount records pass, superblock records do not")
	}
	if p.PostAllowed(f, watchq.SystemCred, srec) != nil || p.PostAllowed(f, watchq.SystemCred, mrec) == nil {
		t.Error("fs-errors grant: superblock records pass, mount records do not")
	}
	if p.Devices(both) != 0 {
		t.Errorf("mount classes grant devices %v", p.Devices(both))
	}
	rs2, _ := Parse(strings.NewReader("user=1002 watch=fs-errors\n"), "t2.conf", stubLookup)
	p.Set(rs2)
	if p.PostAllowed(m, watchq.SystemCred, mrec) == nil {
		t.Error("after a reload without the grant, mount records still pass")
	}
	if _, err := Parse(strings.NewReader("* watch=mount\n"), "bad.conf", stubLookup); err == nil {
		t.Error(`"watch=mount" (not a class) parsed`)
	}
}
