//go:build linux

package daemon_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// TestDeviceUsers runs watchqd with its real device source and three
// unprivileged users: alice may watch block errors, carol block lifecycle,
// bob nothing. A loop device is attached over a FUSE file with a bad range
// (a real uevent: block lifecycle) and read where it is bad (a real
// block_rq_error: a block error). alice gets the error and not the
// lifecycle record; carol the lifecycle record and not the error; bob is
// refused with EACCES and a reason, and gets nothing.
func TestDeviceUsers(t *testing.T) {
	testenv.RequireRoot(t)
	alice, bob, carol := newUser(t, "al"), newUser(t, "bo"), newUser(t, "ca")
	conf := fmt.Sprintf("user=%s watch=block-errors\nuser=%s watch=block-lifecycle\n", alice.name, carol.name)
	e := startDaemon(t, conf, "-devices", "on")
	if strings.Contains(e.Log(), "block_errors=") && !strings.Contains(e.Log(), "block_errors=ok") {
		testenv.Skip(t, "the device source runs without block errors here:\n%s", e.Log())
	}
	root := e.dial(t)

	b := e.spawn(t, bob, "watch", "devices", "1")
	if l := expectPrefix(t, b, "WATCH ERR permission denied"); !strings.Contains(l, "granted none of usb, block-errors, block-lifecycle") {
		t.Errorf("bob's denial: %q", l)
	}
	a := e.spawn(t, alice, "watch", "devices", "1000")
	if l := expectPrefix(t, a, "WATCH OK"); l != "WATCH OK block-errors" {
		t.Errorf("alice: %q", l)
	}
	c := e.spawn(t, carol, "watch", "devices", "1000")
	if l := expectPrefix(t, c, "WATCH OK"); l != "WATCH OK block-lifecycle" {
		t.Errorf("carol: %q", l)
	}

	// A read-only loop device over a 1 MiB FUSE file whose 4 KiB at
	// badOff fail with EIO.
	const badOff = 512 << 10
	loop := devtest.AttachLoop(t, devtest.BadFile(t, 1<<20, badOff, 4096), unix.LO_FLAGS_READ_ONLY)
	dev := loop.Dev

	// carol: the lifecycle record for our loop device.
	for {
		r := parseRec(t, c.next(t))
		n, err := r.Block()
		if err != nil || record.IsBlockError(n.Subtype) {
			t.Fatalf("carol got %v (%v)", r, err)
		}
		if n.Dev == dev {
			break
		}
	}
	// alice: the block error, and before it nothing (lifecycle records are
	// denied to her).
	devtest.FailRead(t, loop.Path, badOff)
	r := parseRec(t, a.next(t))
	n, err := r.Block()
	if err != nil || !record.IsBlockError(n.Subtype) || n.Dev != dev || n.Sector != badOff/512 || r.Tag() != 1 {
		t.Fatalf("alice got %v %+v (%v), want a block error on %#x sector %d", r, n, err, dev, badOff/512)
	}

	// The policy kept the other class out of each queue. alice's record
	// may reach her before the same post has come to carol's watch, later
	// in the device list: wait for the count.
	var s *client.Stats
	var qa, qc client.QueueStats
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s = rootStats(t, root)
		qa, _ = queueOf(s, alice.uid)
		qc, _ = queueOf(s, carol.uid)
		if qa.Denied > 0 && qc.Denied > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("denied counts: alice %d, carol %d; want both > 0", qa.Denied, qc.Denied)
		}
	}
	if _, ok := queueOf(s, bob.uid); ok && s.Entries != nil {
		if qb, _ := queueOf(s, bob.uid); qb.Watches != 0 || qb.Posted != 0 {
			t.Errorf("bob's queue: %+v", qb)
		}
	}
}
