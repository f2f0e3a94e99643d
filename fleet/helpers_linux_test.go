package fleet_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/fleet"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// pubType is the publisher type the tests forward.
const pubType record.Type = 0x800001

// rules grants the test's uid what the forwarder and the publisher need.
const rules = "* watch=usb,block-errors,block-lifecycle,0x800001 publish=0x800001\n"

// jsServer is a real NATS server with JetStream, file storage in a
// temporary directory, on a loopback port that survives restarts.
type jsServer struct {
	tb   testing.TB
	dir  string
	port int
	s    *server.Server
}

func startJetStream(tb testing.TB) *jsServer {
	tb.Helper()
	j := &jsServer{tb: tb, dir: tb.TempDir(), port: -1}
	j.start()
	tb.Cleanup(j.stop)
	return j
}

func (j *jsServer) start() {
	j.tb.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: j.port, JetStream: true, StoreDir: j.dir,
		NoLog: true, NoSigs: true, DisableJetStreamBanner: true}
	s, err := server.NewServer(opts)
	if err != nil {
		j.tb.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		j.tb.Fatal("nats-server not ready")
	}
	j.s = s
	j.port = s.Addr().(*net.TCPAddr).Port
}

// stop shuts the server down, as a kill would stop it serving: every
// connection drops.
func (j *jsServer) stop() {
	if j.s != nil {
		j.s.Shutdown()
		j.s.WaitForShutdown()
		j.s = nil
	}
}

func (j *jsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", j.port) }

// dial returns a JetStream context on a connection closed when the test
// ends; no stream is made.
func (j *jsServer) dial(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := fleet.NATS{URL: j.url(), ReconnectWait: 20 * time.Millisecond}.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// connect returns a JetStream context on a connection closed when the test
// ends, with the fleet's stream created.
func (j *jsServer) connect(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, js := j.dial(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, fleet.StreamConfig("", "", 0, 0)); err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// proxy forwards loopback TCP connections to a target until cut, which
// drops every connection and refuses new ones until heal: a network
// partition between a forwarder and its server.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cut    bool
	wg     sync.WaitGroup
}

func startProxy(tb testing.TB, target string) *proxy {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(func() {
		l.Close()
		p.partition()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "nats://" + p.l.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, s)
		p.wg.Add(2)
		go p.pipe(c, s)
		go p.pipe(s, c)
		p.mu.Unlock()
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func (p *proxy) partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// forwarder runs a forwarder until stopped or the test ends.
type forwarder struct {
	*fleet.Forwarder
	cancel context.CancelFunc
	done   chan error
}

func startForwarder(tb testing.TB, cfg fleet.Config) *forwarder {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, nil))
	}
	if cfg.NATS.ReconnectWait == 0 {
		cfg.NATS.ReconnectWait = 20 * time.Millisecond
	}
	f, err := fleet.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fw := &forwarder{Forwarder: f, cancel: cancel, done: make(chan error, 1)}
	go func() { fw.done <- f.Run(ctx) }()
	tb.Cleanup(func() { fw.stop(tb) })
	return fw
}

func (f *forwarder) stop(tb testing.TB) {
	tb.Helper()
	if f.cancel == nil {
		return
	}
	f.cancel()
	f.cancel = nil
	if err := <-f.done; err != nil {
		tb.Errorf("forwarder Run: %v", err)
	}
}

// waitFor polls cond every 5 ms for at most d.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pubRecord is publisher record number n: 16 bytes, the number in the
// payload.
func pubRecord(n uint64) []byte {
	b, _ := record.Header{Type: pubType, Subtype: 7, Info: record.MakeInfo(16, 0, 0)}.AppendBinary(nil)
	return binary.LittleEndian.AppendUint64(b, n)
}

func pubNumber(r record.Record) uint64 { return binary.LittleEndian.Uint64(r[8:]) }

// publisher publishes through watchqd as a separate client.
type publisher struct {
	c *client.Client
}

func newPublisher(tb testing.TB, d *watchqtest.Daemon) *publisher {
	tb.Helper()
	c, err := client.Dial(context.Background(), d.Path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &publisher{c: c}
}

// publish publishes records from..to-1, waiting for the forwarder to
// have read each chunk of 128 so that its queue (512 notes) never
// overflows.
func (p *publisher) publish(tb testing.TB, f *forwarder, from, to uint64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var base uint64
	if f != nil {
		base = f.Stats().Read
	}
	for n := from; n < to; n++ {
		if err := p.c.Publish(ctx, pubRecord(n)); err != nil {
			tb.Fatal(err)
		}
		if sent := n - from + 1; f != nil && (sent%128 == 0 || n == to-1) {
			waitFor(tb, 30*time.Second, "the forwarder to read", func() bool { return f.Stats().Read >= base+sent })
		}
	}
}

// collect reads n messages from a consumer, or fails after d.
func collect(tb testing.TB, js jetstream.JetStream, cfg fleet.ConsumerConfig, n int, d time.Duration) []*fleet.Message {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []*fleet.Message
	if n == 0 {
		return nil
	}
	for m, err := range fleet.Watch(ctx, js, cfg) {
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				tb.Fatalf("after %d of %d messages: %v", len(out), n, err)
			}
			tb.Fatal(err)
		}
		out = append(out, m)
		if len(out) == n {
			break
		}
	}
	return out
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.tb.Logf("%s", b)
	return len(b), nil
}
