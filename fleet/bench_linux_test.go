package fleet_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/watchq/watchq/fleet"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// BenchmarkFleet measures records per second through the fleet path
// beside the raw JetStream publish rate, in the same run, on the same
// embedded server:
//
//   - watchq: a 24-byte block error record posted to watchqd's device
//     list (policy checked), pumped into the forwarder's queue pipe, read,
//     spooled, published to the stream in fast batches (batch.go), and
//     received by a fleet consumer (Watch, ephemeral); one op is one
//     record received.
//   - forward: the same without the consumer: one op is one record
//     posted to watchqd and acknowledged by the stream.
//   - jetstream: the same messages (subject, headers, 24-byte payload)
//     published with nats.go's PublishMsgAsync and the same window of
//     acknowledgements outstanding; one op is one message acknowledged.
//     This is the bar's baseline. The stream is the same for all four
//     (fleet.StreamConfig: allow_batched does not change a plain publish).
//   - jetstream-consumed: the same, received by a plain pull consumer:
//     the raw equivalent of watchq's path, for comparison.
//
// Run it with scripts/bench-fleet: go test's -count repeats each
// sub-benchmark in a row; the script alternates them run by run.
func BenchmarkFleet(b *testing.B) {
	js := startJetStream(b)
	_, jsc := js.connect(b)
	rec := watchqtest.Rec(record.BlockNotification{Subtype: record.BlockErrorIO, Dev: 7 << 20, Sector: 42})
	run := 0
	type sub struct {
		name string
		f    func(*testing.B)
	}
	var subs []sub

	subs = append(subs, sub{"watchq", func(b *testing.B) {
		run++
		host := fmt.Sprintf("bench%d", run)
		d := watchqtest.StartDaemon(b, rules)
		f := startForwarder(b, fleet.Config{Socket: d.Path, Devices: []fleet.Class{fleet.ClassBlockError}, Host: host, BootID: "boot",
			Dir: b.TempDir(), NATS: fleet.NATS{URL: js.url()}})
		waitFor(b, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		received := make(chan int, 1)
		go func() {
			n := 0
			for m, err := range fleet.Watch(ctx, jsc, fleet.ConsumerConfig{Hosts: []string{host}, Deliver: fleet.DeliverAll,
				OnError: func(err error) { b.Logf("consumer: %v", err) }}) {
				if err != nil {
					break
				}
				if m.Record.IsLoss() {
					b.Errorf("loss: %+v", m)
				}
				n++
				if n == b.N {
					break
				}
			}
			received <- n
		}()
		cpu := startCPU(b)
		for posted := 0; posted < b.N; {
			// The forwarder's queue holds 512 notes: keep at most 448
			// records ahead of its reads so that none is lost.
			ahead := posted - int(f.Stats().Read)
			if ahead >= 448 {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			for range min(448-ahead, b.N-posted) {
				d.Devices.Post(rec)
				posted++
			}
		}
		if n := <-received; n != b.N {
			b.Fatalf("received %d of %d", n, b.N)
		}
		cpu.stop()
		if s := f.Stats(); s.Resends > 0 {
			b.Logf("forwarder: %+v", s)
		}
	}})

	subs = append(subs, sub{"forward", func(b *testing.B) {
		run++
		host := fmt.Sprintf("bench%d", run)
		d := watchqtest.StartDaemon(b, rules)
		f := startForwarder(b, fleet.Config{Socket: d.Path, Devices: []fleet.Class{fleet.ClassBlockError}, Host: host, BootID: "boot",
			Dir: b.TempDir(), NATS: fleet.NATS{URL: js.url()}})
		waitFor(b, 10*time.Second, "the forwarder's watch", func() bool { return f.Stats().Watching })
		cpu := startCPU(b)
		for posted := 0; posted < b.N; {
			// The forwarder's queue holds 512 notes: keep at most 448
			// records ahead of its reads so that none is lost.
			ahead := posted - int(f.Stats().Read)
			if ahead >= 448 {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			for range min(448-ahead, b.N-posted) {
				d.Devices.Post(rec)
				posted++
			}
		}
		waitFor(b, 5*time.Minute, "the acknowledgements", func() bool { return f.Stats().Acked == uint64(b.N) })
		cpu.stop()
		if s := f.Stats(); s.Resends > 0 {
			b.Logf("forwarder: %+v", s)
		}
	}})

	subs = append(subs,
		sub{"jetstream", func(b *testing.B) { rawPublish(b, js, jsc, rec, &run, false) }},
		sub{"jetstream-consumed", func(b *testing.B) { rawPublish(b, js, jsc, rec, &run, true) }})
	// scripts/bench-fleet alternates the order between runs, so that
	// neither side always runs first in a fresh process.
	if os.Getenv("WATCHQ_BENCH_REVERSE") != "" {
		slices.Reverse(subs)
	}
	for _, s := range subs {
		b.Run(s.name, s.f)
	}
}

// rawPublish publishes b.N messages like the forwarder's with nats.go's
// PublishMsgAsync and waits for their acknowledgements; with consume, a
// plain nats.go pull consumer (no acks) receives them too, and one op is
// one message received.
func rawPublish(b *testing.B, js *jsServer, jsc jetstream.JetStream, rec []byte, run *int, consume bool) {
	*run++
	host := fmt.Sprintf("bench%d", *run)
	nc, err := nats.Connect(js.url())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	pub, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(fleet.DefaultWindow))
	if err != nil {
		b.Fatal(err)
	}
	subject := fleet.Subject(fleet.DefaultPrefix, host, fleet.ClassBlockError)
	received := make(chan int, 1)
	if consume {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cons, err := jsc.CreateOrUpdateConsumer(ctx, fleet.DefaultStream, jetstream.ConsumerConfig{
			AckPolicy: jetstream.AckNonePolicy, FilterSubject: fleet.DefaultPrefix + "." + host + ".>", InactiveThreshold: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(512))
		if err != nil {
			b.Fatal(err)
		}
		defer it.Stop()
		go func() {
			n := 0
			next := jetstream.NextContext(ctx)
			for n < b.N {
				if _, err := it.Next(next); err != nil {
					break
				}
				n++
			}
			received <- n
		}()
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	cpu := startCPU(b)
	for i := range b.N {
		seq := strconv.Itoa(i + 1)
		m := &nats.Msg{Subject: subject, Data: append([]byte(nil), rec...), Header: nats.Header{
			fleet.HeaderMsgID: {host + "/boot/" + seq}, fleet.HeaderHost: {host}, fleet.HeaderBoot: {"boot"},
			fleet.HeaderSeq: {seq}, fleet.HeaderTime: {now},
		}}
		if _, err := pub.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-pub.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("acknowledgements outstanding")
	}
	if consume {
		if n := <-received; n != b.N {
			b.Fatalf("received %d of %d", n, b.N)
		}
	}
	cpu.stop()
}

// cpuMeter reports, beside records/s, the CPU time the whole process
// (server, watchqd, forwarder, consumer: everything runs in it) spent per
// record: a figure other load on the machine disturbs far less than the
// rate.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
}

func startCPU(b *testing.B) *cpuMeter {
	b.ResetTimer()
	return &cpuMeter{b: b, start: processCPU(b)}
}

func (c *cpuMeter) stop() {
	c.b.StopTimer()
	used := processCPU(c.b) - c.start
	c.b.ReportMetric(float64(c.b.N)/c.b.Elapsed().Seconds(), "records/s")
	c.b.ReportMetric(float64(used.Nanoseconds())/float64(c.b.N), "cpu-ns/record")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
