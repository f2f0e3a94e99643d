package fleet_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/watchq/watchq/fleet"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// wire records the core NATS messages on a host's subjects as they pass
// the server: what the forwarder published, with its reply subjects.
type wire struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func watchWire(t *testing.T, nc *nats.Conn, host string) *wire {
	t.Helper()
	w := &wire{}
	sub, err := nc.Subscribe(fleet.DefaultPrefix+"."+host+".>", func(m *nats.Msg) {
		w.mu.Lock()
		w.msgs = append(w.msgs, m)
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return w
}

// records returns the messages that carried a record (not the ends of
// batches), and how many distinct fast batches they came in (0 for none).
func (w *wire) records() (ms []*nats.Msg, batches int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := map[string]bool{}
	for _, m := range w.msgs {
		if len(m.Data) == 0 {
			continue
		}
		ms = append(ms, m)
		if strings.HasSuffix(m.Reply, ".$FI") {
			t := strings.Split(m.Reply, ".")
			ids[t[len(t)-6]] = true
		}
	}
	return ms, len(ids)
}

// TestFastBatches: on a stream with allow_batched the forwarder publishes
// its records in fast batches (reply subjects ending in .$FI), and every
// record reaches the consumer once, in order. The records wait in the
// backlog until the server is reachable, so the batches are known: the
// first record alone (it might have been a replay), then the rest in one.
func TestFastBatches(t *testing.T) {
	d := watchqtest.StartDaemon(t, rules)
	js := startJetStream(t)
	nc, jsc := js.connect(t)
	w := watchWire(t, nc, "batched")
	p := startProxy(t, js.url()[len("nats://"):])
	p.partition()
	f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "batched", BootID: "b",
		Dir: t.TempDir(), NATS: fleet.NATS{URL: p.url(), ReconnectWait: 20 * time.Millisecond}})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	const n = 2000
	newPublisher(t, d).publish(t, f, 1, n+1)
	if s := f.Stats(); s.Spooled != n || s.Published != 0 {
		t.Fatalf("before the server is reachable: %+v", s)
	}
	p.heal()
	waitFor(t, 20*time.Second, "the acknowledgements", func() bool { return f.Stats().Acked == n })
	checkPublisherRun(t, collect(t, jsc, fleet.ConsumerConfig{Hosts: []string{"batched"}}, n, 20*time.Second), "batched", 1, 1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ms, batches := w.records()
	if len(ms) != n {
		t.Fatalf("%d records on the wire, want %d", len(ms), n)
	}
	fi := 0
	for _, m := range ms {
		if strings.HasSuffix(m.Reply, ".$FI") {
			fi++
		}
	}
	if fi != n || batches != 2 {
		t.Errorf("%d of %d records published in fast batches, %d batches, want 2", fi, n, batches)
	}
	if s := f.Stats(); s.Resends != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestNoFastBatches: a stream without allow_batched refuses the
// forwarder's first fast batch; the forwarder then publishes one record at
// a time with a PubAck each, and every record reaches the consumer once,
// in order.
func TestNoFastBatches(t *testing.T) {
	d := watchqtest.StartDaemon(t, rules)
	js := startJetStream(t)
	nc, jsc := js.dial(t)
	cfg := fleet.StreamConfig("", "", 0, 0)
	cfg.AllowBatchPublish = false
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := jsc.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	w := watchWire(t, nc, "single")
	f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "single", BootID: "b",
		Dir: t.TempDir(), NATS: fleet.NATS{URL: js.url()}})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	const n = 300
	newPublisher(t, d).publish(t, f, 1, n+1)
	waitFor(t, 20*time.Second, "the acknowledgements", func() bool { return f.Stats().Acked == n })
	checkPublisherRun(t, collect(t, jsc, fleet.ConsumerConfig{Hosts: []string{"single"}}, n, 20*time.Second), "single", 1, 1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ms, batches := w.records()
	// The refused fast batch (its first record) and then each record once
	// with a plain reply subject.
	if len(ms) != n+1 || batches != 1 || !strings.HasSuffix(ms[0].Reply, ".$FI") {
		t.Fatalf("%d records on the wire in %d fast batches, want %d in 1", len(ms), batches, n+1)
	}
	if a, b := ms[0].Header.Get(fleet.HeaderMsgID), ms[1].Header.Get(fleet.HeaderMsgID); a != b {
		t.Errorf("the refused record %s published again as %s", a, b)
	}
	for i, m := range ms[1:] {
		if strings.HasSuffix(m.Reply, ".$FI") {
			t.Errorf("record %d: reply %q", i+1, m.Reply)
		}
	}
}

// TestStreamLater: with no stream yet, the server answers the forwarder's
// first fast batch with "no responders"; the records wait in the backlog,
// and once an administrator creates the stream they all go in, once, in
// order.
func TestStreamLater(t *testing.T) {
	d := watchqtest.StartDaemon(t, rules)
	js := startJetStream(t)
	_, jsc := js.dial(t)
	f := startForwarder(t, fleet.Config{Socket: d.Path, Publishers: []record.Type{pubType}, Host: "early", BootID: "b",
		Dir: t.TempDir(), NATS: fleet.NATS{URL: js.url()}})
	waitFor(t, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
	const n = 50
	newPublisher(t, d).publish(t, f, 1, n+1)
	waitFor(t, 10*time.Second, "a refused publish", func() bool { return f.Stats().Resends > 0 })
	if s := f.Stats(); s.Acked != 0 {
		t.Fatalf("acknowledged without a stream: %+v", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := jsc.CreateStream(ctx, fleet.StreamConfig("", "", 0, 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the acknowledgements", func() bool { return f.Stats().Acked == n })
	checkPublisherRun(t, collect(t, jsc, fleet.ConsumerConfig{Hosts: []string{"early"}}, n, 20*time.Second), "early", 1, 1)
	info, err := mustStream(t, jsc).Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Errorf("the stream holds %d messages, want %d", info.State.Msgs, n)
	}
}
