//go:build linux

package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
)

// rootStats returns every queue's stats, seen by a root client.
func rootStats(tb testing.TB, c *client.Client) *client.Stats {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Stats(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func queueOf(s *client.Stats, uid uint32) (client.QueueStats, bool) {
	for _, e := range s.Entries {
		if e.UID == uid {
			return e, true
		}
	}
	return client.QueueStats{}, false
}

// TestPublisherPolicyAndReload: a publisher's records reach only the
// watchers the policy allows; denials are EACCES with a reason and one log
// line; SIGHUP reloads the rules and changes decisions for existing and
// new watches without dropping anyone.
func TestPublisherPolicyAndReload(t *testing.T) {
	pub, wa, wb := newUser(t, "p"), newUser(t, "a"), newUser(t, "b")
	const typ = "0x800010"
	conf := fmt.Sprintf("user=%s publish=%s\nuser=%s watch=%s\n", pub.name, typ, wa.name, typ)
	e := startDaemon(t, conf, "-devices", "off")
	root := e.dial(t)

	b := e.spawn(t, wb, "watch", typ, "1")
	l := expectPrefix(t, b, "WATCH ERR permission denied")
	if !strings.Contains(l, fmt.Sprintf("uid %d", wb.uid)) || !strings.Contains(l, "0x800010") {
		t.Errorf("denial reason does not say who and what: %q", l)
	}
	a := e.spawn(t, wa, "watch", typ, "3")
	expectPrefix(t, a, "WATCH OK")

	p := e.spawn(t, pub, "publish", typ, "3")
	expectPrefix(t, p, "PUB OK")
	for i := range 3 {
		r := parseRec(t, a.next(t))
		if r.Type() != 0x800010 || r.Subtype() != uint8(i) || r.Tag() != 2 || len(r) != 16 {
			t.Fatalf("record %d: %v", i, r)
		}
	}
	expectPrefix(t, a, "DONE")
	p2 := e.spawn(t, pub, "publish", "0x800011", "1")
	expectPrefix(t, p2, "PUB ERR permission denied")
	p3 := e.spawn(t, wa, "publish", typ, "1")
	expectPrefix(t, p3, "PUB ERR permission denied")

	// The log reaches us through a pipe: wait for it.
	waitFor(t, "3 denials logged", func() bool { return strings.Count(e.Log(), "msg=denied") >= 3 })
	if n := strings.Count(e.Log(), "msg=denied"); n != 3 {
		t.Errorf("daemon logged %d denials, want 3:\n%s", n, e.Log())
	}

	// Reload: wb may now watch, wa may not. wa's watch stays but its
	// records are denied from now on.
	e.reload(t, fmt.Sprintf("user=%s publish=%s\nuser=%s watch=%s\n", pub.name, typ, wb.name, typ))
	b2 := e.spawn(t, wb, "watch", typ, "2")
	expectPrefix(t, b2, "WATCH OK")
	p4 := e.spawn(t, pub, "publish", typ, "2")
	expectPrefix(t, p4, "PUB OK")
	for i := range 2 {
		if r := parseRec(t, b2.next(t)); r.Subtype() != uint8(i) {
			t.Fatalf("wb record %d: %v", i, r)
		}
	}
	s := rootStats(t, root)
	qa, ok := queueOf(s, wa.uid)
	if !ok || qa.Posted != 3 || qa.Denied != 2 || qa.Watches != 1 {
		t.Errorf("wa's queue after reload: %+v (found %v), want 3 posted, 2 denied, 1 watch", qa, ok)
	}
}

// TestMalformedMessages: truncated, oversized, garbled and out-of-order
// control messages each get an error reply with the kernel's errno; the
// connection keeps working, no fd leaks, and the daemon keeps serving
// another client meanwhile.
func TestMalformedMessages(t *testing.T) {
	e := startDaemon(t, "* watch=0x800040 publish=0x800040\n", "-devices", "off")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A bystander that must keep receiving records throughout.
	by := e.dial(t)
	bq, err := by.CreateQueue(ctx, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := bq.WatchPublisher(ctx, 0x800040, 1); err != nil {
		t.Fatal(err)
	}
	pubc := e.dial(t)
	stopPub := make(chan struct{})
	var wg sync.WaitGroup
	var published int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopPub:
				return
			case <-time.After(time.Millisecond):
			}
			if err := pubc.Publish(ctx, pubRecord(0x800040, uint8(published))); err != nil {
				t.Error(err)
				return
			}
			published++
		}
	}()

	fdsBefore := e.fds(t)
	r := dialRaw(t, e.sock)
	r.expect(t, rawMsg(4, 1, u32(0)), syscall.EPROTO)                       // set-filter before hello
	r.expect(t, rawMsg(1, 2, u32(99)), syscall.EPROTONOSUPPORT)             // wrong version
	r.expect(t, rawMsg(1, 3, u32(1)), 0)                                    // hello
	r.expect(t, rawMsg(1, 4, u32(1)), syscall.EPROTO)                       // second hello
	r.expect(t, []byte{1, 0, 0}, syscall.EINVAL)                            // truncated header
	r.expect(t, rawMsg(2, 5, u32(0))[:14], syscall.EINVAL)                  // truncated body
	r.expect(t, append(rawMsg(2, 6, u32(0)), 0), syscall.EINVAL)            // length mismatch
	r.expect(t, make([]byte, protocol.MaxRequest+1), syscall.EMSGSIZE)      // oversized
	r.expect(t, rawMsg(99, 7, nil), syscall.EOPNOTSUPP)                     // unknown op
	r.expect(t, rawMsg(4, 8, u32(12345)), syscall.EBADF)                    // no such queue
	r.expect(t, rawMsg(3, 9, u32(1, 1)), syscall.EBADF)                     // set-size, no such queue
	r.expect(t, rawMsg(7, 10, pubRecord(0x123, 0)), syscall.EINVAL)         // kernel type
	r.expect(t, rawMsg(7, 11, pubRecord(0x800040, 0)[:12]), syscall.EINVAL) // length field lies
	r.expect(t, rawMsg(7, 12, make([]byte, 200)), syscall.EINVAL)           // oversized record
	r.expect(t, rawMsg(7, 13, pubRecord(0x800041, 0)), syscall.EACCES)      // not granted
	qid := r.createQueue(t)
	r.expect(t, rawMsg(3, 14, u32(qid, 0)), syscall.EINVAL)   // size 0
	r.expect(t, rawMsg(3, 15, u32(qid, 513)), syscall.EINVAL) // size > 512
	r.expect(t, rawMsg(3, 16, u32(qid, 1)), 0)
	r.expect(t, rawMsg(3, 17, u32(qid, 1)), syscall.EBUSY)                                              // size twice
	r.expect(t, rawMsg(4, 18, u32(qid, 17, 0)), syscall.EINVAL)                                         // 17 filters
	r.expect(t, rawMsg(4, 19, u32(qid, 1, 1)), syscall.EINVAL)                                          // reserved != 0
	r.expect(t, rawMsg(4, 20, u32(qid, 1, 0, 1)), syscall.EINVAL)                                       // short entry
	r.expect(t, rawMsg(4, 21, append(u32(qid, 1, 0, 3, 1, 0), make([]byte, 32)...)), syscall.EINVAL)    // info_filter outside mask
	r.expect(t, rawMsg(4, 22, append(u32(qid, 1, 0, 3, 0, 0x7f), make([]byte, 32)...)), syscall.EINVAL) // mask covers length
	r.expect(t, rawMsg(5, 23, u32(qid, 5, 0)), syscall.ENODEV)                                          // devices off
	r.expect(t, rawMsg(6, 24, u32(qid, 0x800040, 256)), syscall.EINVAL)                                 // tag 256
	r.expect(t, rawMsg(6, 25, u32(qid, 0x800040, 0xffffffff)), syscall.EBADSLT)                         // remove missing
	r.expect(t, rawMsg(6, 26, u32(qid, 0x800040, 3)), 0)
	r.expect(t, rawMsg(6, 27, u32(qid, 0x800040, 3)), syscall.EBUSY) // twice
	r.expect(t, rawMsg(6, 28, u32(qid, 0x800041, 3)), syscall.EACCES)
	r.expectWithFD(t, rawMsg(8, 29, u32(0)), syscall.EINVAL) // fds attached are refused and closed
	// Random garbage: every packet gets a reply, the daemon survives.
	rng := uint64(1)
	for i := range 300 {
		b := make([]byte, 1+i%90)
		for j := range b {
			rng = rng*6364136223846793005 + 1442695040888963407
			b[j] = byte(rng >> 56)
		}
		if i%3 == 0 && len(b) >= 12 { // plausible header, random body
			copy(b, rawMsg(uint16(1+i%10), uint32(i), b[12:]))
		}
		r.roundTrip(t, b)
	}
	r.expect(t, rawMsg(8, 30, u32(0)), 0) // still serving this connection
	r.c.Close()

	close(stopPub)
	wg.Wait()
	for i := range published {
		rec, err := bq.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Subtype() != uint8(i) {
			t.Fatalf("bystander record %d: %v", i, rec)
		}
	}
	if published == 0 {
		t.Error("nothing published during the barrage")
	}
	waitFor(t, "daemon fds back to baseline", func() bool { return e.fds(t) == fdsBefore })
}

// waitFor polls cond for up to 10 seconds.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHundredClients: 100 concurrent connections each get every record of
// a publisher, in order, stamped with their own tag.
func TestHundredClients(t *testing.T) {
	e := startDaemon(t, "* watch=0x800050 publish=0x800050\n", "-devices", "off")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const clients, records = 100, 50
	qs := make([]*client.Queue, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Dial(ctx, e.sock)
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() { c.Close() })
			q, err := c.CreateQueue(ctx, 64)
			if err == nil {
				err = q.WatchPublisher(ctx, 0x800050, record.Tag(i))
			}
			if err != nil {
				t.Error(err)
				return
			}
			qs[i] = q
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	p := e.dial(t)
	for i := range records {
		if err := p.Publish(ctx, pubRecord(0x800050, uint8(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range records {
				r, err := q.Next(ctx)
				if err != nil {
					t.Errorf("client %d record %d: %v", i, j, err)
					return
				}
				if r.Subtype() != uint8(j) || r.Tag() != record.Tag(i) {
					t.Errorf("client %d record %d: %v", i, j, r)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s := rootStats(t, p); s.Clients != clients+1 || s.Queues != clients {
		t.Errorf("daemon sees %d clients, %d queues; want %d, %d", s.Clients, s.Queues, clients+1, clients)
	}
}

// TestKill9: clients killed with SIGKILL mid-stream leave no queue, watch
// or file descriptor behind in the daemon.
func TestKill9(t *testing.T) {
	e := startDaemon(t, "* watch=0x800060 publish=0x800060\n", "-devices", "off")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := e.dial(t)
	base := e.fds(t)
	var kids []*child
	for range 10 {
		k := e.spawn(t, nil, "hold", "0x800060", "0")
		expectPrefix(t, k, "WATCH OK")
		kids = append(kids, k)
	}
	if got := e.fds(t); got < base+20 {
		t.Fatalf("daemon has %d fds with 10 clients, baseline %d: want at least 2 more per client", got, base)
	}
	p := e.dial(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := p.Publish(ctx, pubRecord(0x800060, uint8(i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for _, k := range kids {
		expectPrefix(t, k, "REC ") // mid-stream
	}
	for _, k := range kids {
		k.cmd.Process.Signal(syscall.SIGKILL)
	}
	for _, k := range kids {
		k.cmd.Wait()
	}
	close(stop)
	<-done
	waitFor(t, "daemon fds and clients back to baseline", func() bool {
		return e.fds(t) == base+1 && rootStats(t, root).Clients == 2 // + the publisher
	})
	s := rootStats(t, root)
	if s.Queues != 0 || len(s.Entries) != 0 || s.Clients != 2 {
		t.Errorf("after kill -9: %d clients, %d queues, entries %+v", s.Clients, s.Queues, s.Entries)
	}
}

// TestSlowClientLoss: a client that does not read loses records in its
// own queue and is told how many by the loss record; the count of records
// read plus records reported lost is exactly what was published.
func TestSlowClientLoss(t *testing.T) {
	e := startDaemon(t, "* watch=0x800070 publish=0x800070\n", "-devices", "off", "-pipe-slots", "16")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.dial(t)
	q, err := c.CreateQueue(ctx, 32)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.WatchPublisher(ctx, 0x800070, 0); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := range n {
		if err := c.Publish(ctx, pubRecord(0x800070, uint8(i))); err != nil {
			t.Fatal(err)
		}
	}
	got, lost, losses := 0, 0, 0
	for got+lost < n {
		r, err := q.Next(ctx)
		if err != nil {
			t.Fatalf("after %d records and %d lost: %v", got, lost, err)
		}
		if r.IsLoss() {
			l, _ := r.Loss()
			lost += int(l.Count)
			losses++
			continue
		}
		if r.Type() != 0x800070 {
			t.Fatalf("unexpected record %v", r)
		}
		got++
	}
	if losses == 0 || got+lost != n {
		t.Errorf("read %d, lost %d in %d loss records; published %d", got, lost, losses, n)
	}
	var _ = watchq.ErrClosed
}
