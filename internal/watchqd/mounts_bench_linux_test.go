package watchqd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/watchqtest"
)

// BenchmarkWatchMountRequest measures what a watch-mount request costs
// through the daemon — the client's namespace found through its pidfd,
// the path looked up by the namespace's mount source on its thread — beside
// its baseline, a watch-devices request on the same connection, in the same
// iteration: each iteration adds and removes a mount watch, then adds and
// removes a device watch. Reported: ns per add+remove pair of each, and
// their ratio.
func BenchmarkWatchMountRequest(b *testing.B) {
	testenv.RequireRoot(b)
	rs, err := policy.Parse(strings.NewReader("* watch=mounts,devices\n"), "bench.conf", nil)
	if err != nil {
		b.Fatal(err)
	}
	pol := policy.New(rs)
	eng := watchq.NewEngine(watchq.Config{Policy: pol})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := daemon.New(daemon.Config{Engine: eng, Policy: pol, Devices: watchqtest.NewDevices(eng), Mounts: newMountSource(ctx, eng, log), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(b.TempDir(), "watchqd.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	defer func() { cancel(); <-done }()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, 64)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if err := q.WatchMount(ctx, dir, 1); err != nil { // opens the namespace's source
		b.Fatal(err)
	}
	if err := q.UnwatchMount(ctx, dir); err != nil {
		b.Fatal(err)
	}
	var mounts, devices time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := q.WatchMount(ctx, dir, 1); err != nil {
			b.Fatal(err)
		}
		if err := q.UnwatchMount(ctx, dir); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := q.WatchDevices(ctx, 2); err != nil {
			b.Fatal(err)
		}
		if err := q.UnwatchDevices(ctx); err != nil {
			b.Fatal(err)
		}
		mounts += t1.Sub(t0)
		devices += time.Since(t1)
	}
	n := float64(b.N)
	b.ReportMetric(float64(mounts.Nanoseconds())/n, "ns/mount-pair")
	b.ReportMetric(float64(devices.Nanoseconds())/n, "ns/devices-pair")
	b.ReportMetric(float64(mounts)/float64(devices), "mount/devices")
	b.ReportMetric(0, "ns/op")
}
