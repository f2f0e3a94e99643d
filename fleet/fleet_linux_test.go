package fleet_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/watchq/watchq/fleet"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// TestForward: device and publisher records from a real watchqd (the
// in-process server with the engine and policy; a fake device source)
// reach a fleet consumer with their exact bytes, on subjects naming host
// and class, with the host, boot, sequence and time headers and
// Nats-Msg-Id host/boot/sequence.
func TestForward(t *testing.T) {
	d := watchqtest.StartDaemon(t, rules)
	js := startJetStream(t)
	_, jsc := js.connect(t)
	f := startForwarder(t, fleet.Config{
		Socket: d.Path, Devices: []fleet.Class{fleet.ClassUSB, fleet.ClassBlockError}, Publishers: []record.Type{pubType},
		Host: "web1.example.com", BootID: "boot-a", Dir: t.TempDir(), NATS: fleet.NATS{URL: js.url()},
	})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })

	want := [][]byte{
		watchqtest.Rec(record.USBNotification{Subtype: record.USBDeviceAdd, Name: "1-1"}),
		watchqtest.Rec(record.BlockNotification{Subtype: record.BlockErrorIO, Dev: 7 << 20, Sector: 42}),
		pubRecord(1),
		// Not forwarded: a class the forwarder does not ask for.
		watchqtest.Rec(record.BlockNotification{Subtype: record.BlockAdd, Dev: 7 << 20, Name: "loop0"}),
		watchqtest.Rec(record.USBNotification{Subtype: record.USBDeviceRemove, Name: "1-1"}),
	}
	before := time.Now()
	d.Devices.Post(want[0])
	d.Devices.Post(want[1])
	newPublisher(t, d).publish(t, nil, 1, 2)
	waitFor(t, 10*time.Second, "the publisher record", func() bool { return f.Stats().Read == 3 })
	d.Devices.Post(want[3])
	d.Devices.Post(want[4])
	want = append(want[:3], want[4])
	subjects := []string{"watchq.web1_example_com.usb", "watchq.web1_example_com.block.error", "watchq.web1_example_com.pub.800001", "watchq.web1_example_com.usb"}

	got := collect(t, jsc, fleet.ConsumerConfig{}, len(want), 10*time.Second)
	for i, m := range got {
		if !bytes.Equal(m.Record, want[i]) {
			t.Errorf("message %d: record % x, want % x", i, []byte(m.Record), want[i])
		}
		if m.Subject != subjects[i] || m.Host != "web1.example.com" || m.Boot != "boot-a" || m.Seq != uint64(i+1) || m.Gap != 0 || m.Late {
			t.Errorf("message %d: %+v", i, m)
		}
		if m.Time.Before(before.Add(-time.Second)) || m.Time.After(time.Now()) {
			t.Errorf("message %d: time %v", i, m.Time)
		}
		raw, err := mustStream(t, jsc).GetMsg(context.Background(), m.StreamSeq)
		if err != nil {
			t.Fatal(err)
		}
		if id := raw.Header.Get("Nats-Msg-Id"); id != fmt.Sprintf("web1.example.com/boot-a/%d", i+1) {
			t.Errorf("message %d: Nats-Msg-Id %q", i, id)
		}
	}

	// Filters by host and class.
	got = collect(t, jsc, fleet.ConsumerConfig{Hosts: []string{"web1.example.com"}, Classes: []fleet.Class{fleet.ClassUSB}}, 2, 10*time.Second)
	if got[0].Seq != 1 || got[1].Seq != 4 {
		t.Errorf("usb consumer: seqs %d %d, want 1 4", got[0].Seq, got[1].Seq)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	for m, err := range fleet.Watch(ctx, jsc, fleet.ConsumerConfig{Hosts: []string{"other"}}) {
		if err == nil {
			t.Errorf("consumer for another host got %+v", m)
		}
	}
}

func mustStream(t *testing.T, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	s, err := js.Stream(context.Background(), fleet.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkPublisherRun checks that ms are the host's sequence from firstSeq
// on, each once, in order, carrying publisher records numbered from
// firstNum on.
func checkPublisherRun(t *testing.T, ms []*fleet.Message, host string, firstSeq, firstNum uint64) {
	t.Helper()
	for i, m := range ms {
		if m.Host != host || m.Seq != firstSeq+uint64(i) || m.Record.Type() != pubType || pubNumber(m.Record) != firstNum+uint64(i) {
			t.Fatalf("message %d: host %s seq %d record %v number %d; want %s seq %d number %d",
				i, m.Host, m.Seq, m.Record, pubNumber(m.Record), host, firstSeq+uint64(i), firstNum+uint64(i))
		}
	}
}

// TestServerRestart: the NATS server is stopped and started again (same
// store) while records flow; the consumer, reading throughout, gets
// every record exactly once, in order.
func TestServerRestart(t *testing.T) {
	d := watchqtest.StartDaemon(t, rules)
	js := startJetStream(t)
	_, jsc := js.connect(t)
	f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "h1", BootID: "b1",
		Dir: t.TempDir(), NATS: fleet.NATS{URL: js.url()}, AckTimeout: time.Second})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	p := newPublisher(t, d)

	const total = 3000
	var got []*fleet.Message
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		got = collect(t, jsc, fleet.ConsumerConfig{Durable: "restart"}, total, 60*time.Second)
	}()
	p.publish(t, f, 0, 1000)
	waitFor(t, 10*time.Second, "some acknowledgements", func() bool { return f.Stats().Acked > 100 })
	js.stop()
	p.publish(t, f, 1000, 2000) // into the backlog
	js.start()
	p.publish(t, f, 2000, total)
	wg.Wait()
	checkPublisherRun(t, got, "h1", 1, 0)
	waitFor(t, 10*time.Second, "every acknowledgement", func() bool { return f.Stats().Acked == total })
	if s := f.Stats(); s.Dropped != 0 || s.Resends == 0 {
		t.Errorf("stats %+v: want resends and no drops", s)
	}
	if st := streamMsgs(t, jsc); st != total {
		t.Errorf("stream holds %d messages, want %d (no duplicates)", st, total)
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	info, err := mustStream(t, js).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestPartitionPastBacklog: the network between forwarder and server is
// cut for longer than the backlog holds. The consumer sees every record
// before the cut, the records that fit in the backlog, exactly one loss
// record with the exact number of records dropped, and every record
// after the network came back.
func TestPartitionPastBacklog(t *testing.T) {
	d := watchqtest.StartDaemon(t, rules)
	js := startJetStream(t)
	_, jsc := js.connect(t)
	px := startProxy(t, fmt.Sprintf("127.0.0.1:%d", js.port))
	f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "h1", BootID: "b1",
		Dir: t.TempDir(), Backlog: fleet.MinBacklog, NATS: fleet.NATS{URL: px.url()}, AckTimeout: time.Second})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	p := newPublisher(t, d)

	p.publish(t, f, 0, 100)
	waitFor(t, 10*time.Second, "the first records' acknowledgements", func() bool { return f.Stats().Acked == 100 })
	px.partition()
	const during = 2000 // 16 KiB holds about 290 56-byte entries
	p.publish(t, f, 100, 100+during)
	dropped := f.Stats().Dropped
	if dropped == 0 || dropped >= during {
		t.Fatalf("dropped %d of %d", dropped, during)
	}
	kept := during - dropped
	px.heal()
	// The loss record goes in as soon as the backlog has room again.
	waitFor(t, 20*time.Second, "the backlog replayed and the loss spooled", func() bool {
		s := f.Stats()
		return s.Spooled == 100+kept+1 && s.Acked == s.Spooled
	})
	p.publish(t, f, 100+during, 200+during)
	got := collect(t, jsc, fleet.ConsumerConfig{}, int(100+kept+1+100), 30*time.Second)
	checkPublisherRun(t, got[:100+kept], "h1", 1, 0)
	loss := got[100+kept]
	if !loss.Record.IsLoss() || loss.Lost != dropped || loss.Cause != fleet.CauseBacklog || loss.Class != fleet.ClassLoss ||
		loss.Seq != 101+kept || !strings.HasSuffix(loss.Subject, ".h1.loss") {
		t.Fatalf("after %d records: %+v, want a loss record of %d", 100+kept, loss, dropped)
	}
	if l, _ := loss.Record.Loss(); uint64(l.Count) != min(dropped, 0xffff) {
		t.Errorf("loss record counts %d, want %d", l.Count, dropped)
	}
	checkPublisherRun(t, got[101+kept:], "h1", 102+kept, 100+during)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	n := 0
	for _, err := range fleet.Watch(ctx, jsc, fleet.ConsumerConfig{Deliver: fleet.DeliverFromSeq, StartSeq: uint64(len(got) + 1)}) {
		if err == nil {
			n++
		}
	}
	if n != 0 {
		t.Errorf("%d messages after the expected ones", n)
	}
}

// TestQueueLoss: the forwarder's own watchqd queue overflows; the losses
// go into the stream as loss records at their place, with exact counts.
func TestQueueLoss(t *testing.T) {
	d := watchqtest.StartDaemon(t, rules)
	js := startJetStream(t)
	_, jsc := js.connect(t)
	f := startForwarder(t, fleet.Config{Socket: d.Path, Devices: []fleet.Class{fleet.ClassUSB}, QueueSize: 32,
		Host: "h1", BootID: "b1", Dir: t.TempDir(), NATS: fleet.NATS{URL: js.url()}})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	const posted = 5000
	for i := range posted {
		d.Devices.Post(watchqtest.Rec(record.USBNotification{Subtype: record.USBDeviceAdd, Name: fmt.Sprintf("%d", i)}))
	}
	waitFor(t, 10*time.Second, "the forwarder to read or count everything", func() bool {
		s := f.Stats()
		return s.Read+s.QueueLost == posted && s.Acked == s.Spooled
	})
	if f.Stats().QueueLost == 0 {
		t.Skip("the forwarder kept up with 5000 posts into 32 notes; nothing to test")
	}
	lost := f.Stats().QueueLost
	n := int(f.Stats().Spooled)
	got := collect(t, jsc, fleet.ConsumerConfig{}, n, 10*time.Second)
	var records, counted uint64
	next := 0
	for _, m := range got {
		if m.Record.IsLoss() {
			if m.Cause != fleet.CauseQueue || m.Lost == 0 {
				t.Errorf("loss %+v", m)
			}
			counted += m.Lost
			continue
		}
		u, _ := m.Record.USB()
		var k int
		fmt.Sscan(u.Name, &k)
		if k < next {
			t.Fatalf("record %d after %d", k, next)
		}
		next = k + 1
		records++
	}
	if records+counted != posted || counted != lost {
		t.Errorf("%d records + %d counted lost, want %d posted, %d lost in the queue", records, counted, posted, lost)
	}
}

// TestTwoHosts: two forwarders for two hosts (two daemons, two host
// names, two boot ids) publishing at once: one consumer sees each host's
// records in order.
func TestTwoHosts(t *testing.T) {
	js := startJetStream(t)
	_, jsc := js.connect(t)
	const each = 1500
	var wg sync.WaitGroup
	for _, h := range []string{"alpha", "beta"} {
		d := watchqtest.StartDaemon(t, rules)
		f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: h, BootID: "boot-" + h,
			Dir: t.TempDir(), NATS: fleet.NATS{URL: js.url()}})
		waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
		p := newPublisher(t, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.publish(t, f, 0, each)
		}()
	}
	got := collect(t, jsc, fleet.ConsumerConfig{}, 2*each, 30*time.Second)
	wg.Wait()
	per := map[string][]*fleet.Message{}
	for _, m := range got {
		per[m.Host] = append(per[m.Host], m)
	}
	for _, h := range []string{"alpha", "beta"} {
		if len(per[h]) != each {
			t.Fatalf("%s: %d records, want %d", h, len(per[h]), each)
		}
		checkPublisherRun(t, per[h], h, 1, 0)
	}
	// Interleaved, or the test proved little.
	switches := 0
	for i := 1; i < len(got); i++ {
		if got[i].Host != got[i-1].Host {
			switches++
		}
	}
	t.Logf("%d host switches in the stream", switches)
}

// TestRestartResumes: a forwarder stopped with records not yet
// acknowledged (the server cut off) and started again on the same
// backlog publishes them, then goes on with the next sequence; the
// consumer sees every record once.
func TestRestartResumes(t *testing.T) {
	d := watchqtest.StartDaemon(t, rules)
	js := startJetStream(t)
	_, jsc := js.connect(t)
	px := startProxy(t, fmt.Sprintf("127.0.0.1:%d", js.port))
	dir := t.TempDir()
	cfg := fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "h1", BootID: "b1",
		Dir: dir, NATS: fleet.NATS{URL: px.url()}, AckTimeout: time.Second}
	f := startForwarder(t, cfg)
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	p := newPublisher(t, d)
	p.publish(t, f, 0, 200)
	waitFor(t, 10*time.Second, "acknowledgements", func() bool { return f.Stats().Acked == 200 })
	px.partition()
	p.publish(t, f, 200, 300)
	f.stop(t)
	if s := f.Stats(); s.Acked != 200 || s.Spooled != 300 {
		t.Fatalf("stopped with %+v, want 300 spooled, 200 acknowledged", s)
	}
	px.heal()

	f = startForwarder(t, cfg)
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	p.publish(t, f, 300, 400)
	got := collect(t, jsc, fleet.ConsumerConfig{}, 400, 30*time.Second)
	checkPublisherRun(t, got, "h1", 1, 0)
	waitFor(t, 10*time.Second, "acknowledgements", func() bool { return f.Stats().Acked == 400 })
	f.stop(t)
	if n := streamMsgs(t, jsc); n != 400 {
		t.Errorf("stream holds %d messages, want 400", n)
	}
}

// TestServerKill9: the same with the nats-server binary (built from the
// module) killed with SIGKILL mid-stream and started again on its store:
// nothing the stream acknowledged is lost, nothing is duplicated at the
// consumer or in the stream.
func TestServerKill9(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("go build nats-server: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	store := t.TempDir()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	var srv *exec.Cmd
	startServer := func() {
		t.Helper()
		srv = exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", store)
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "nats-server to listen", func() bool {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	kill := func() {
		srv.Process.Kill()
		srv.Wait()
	}
	startServer()
	t.Cleanup(kill)
	j := &jsServer{tb: t, port: port}
	_, jsc := j.connect(t)

	d := watchqtest.StartDaemon(t, rules)
	f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "h1", BootID: "b1",
		Dir: t.TempDir(), NATS: fleet.NATS{URL: url}, AckTimeout: time.Second})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	p := newPublisher(t, d)
	const total = 3000
	var got []*fleet.Message
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		got = collect(t, jsc, fleet.ConsumerConfig{Durable: "kill9"}, total, 90*time.Second)
	}()
	p.publish(t, f, 0, 1000)
	waitFor(t, 10*time.Second, "some acknowledgements", func() bool { return f.Stats().Acked > 100 })
	kill()
	acked := f.Stats().Acked
	p.publish(t, f, 1000, 2000)
	startServer()
	p.publish(t, f, 2000, total)
	wg.Wait()
	checkPublisherRun(t, got, "h1", 1, 0)
	waitFor(t, 20*time.Second, "every acknowledgement", func() bool { return f.Stats().Acked == total })
	if n := streamMsgs(t, jsc); n != total {
		t.Errorf("stream holds %d messages, want %d (killed with %d acknowledged)", n, total, acked)
	}
}
