//go:build linux

package daemon_test

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// BenchmarkDaemonDelivery measures records per second from the daemon's
// engine to clients through the packet pipe, beside the raw packet-pipe
// rate measured in the same run:
//
//   - watchqd: one client; each op is one 24-byte block error record
//     posted to the device watch list (policy checked), pumped into the
//     client's pipe and read back by package client.
//   - watchqd-16clients: the same record fanned out to 16 clients.
//   - watchqd-ring: watchqd's path through a shared-memory ring
//     (create-ring) instead of a pipe; see benchRing.
//   - rawpipe: one 16-byte write(2) per record into a pipe2(O_DIRECT) pipe
//     with the same number of slots, one read(2) per record on the other
//     side: the floor the daemon's pump is built on.
//
// The poster keeps at most window records in flight per client, so no
// record is lost and the figure is sustained delivery, not drop rate.
func BenchmarkDaemonDelivery(b *testing.B) {
	b.Run("watchqd", func(b *testing.B) { benchDaemon(b, 1) })
	b.Run("watchqd-16clients", func(b *testing.B) { benchDaemon(b, 16) })
	b.Run("watchqd-ring", benchRing) // bench_ring_test.go
	b.Run("rawpipe", benchRawPipe)
}

const window = 256

func benchDaemon(b *testing.B, clients int) {
	ip := startInProcess(b, "* watch=devices\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recv := make([]atomic.Int64, clients)
	// progress wakes the poster when a client has read something: the
	// poster blocks instead of spinning (a spin would take one of the
	// machine's cores from the daemon).
	progress := make(chan struct{}, 1)
	var wg sync.WaitGroup
	var cs []*client.Client
	for i := range clients {
		c, err := client.Dial(ctx, ip.Path)
		if err != nil {
			b.Fatal(err)
		}
		cs = append(cs, c)
		q, err := c.CreateQueue(ctx, 512)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := q.WatchDevices(ctx, record.Tag(i)); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := q.Read(ctx, buf)
				if err != nil {
					return
				}
				for r, err := range record.Records(buf[:n]) {
					if err != nil || r.IsLoss() {
						b.Errorf("client %d: %v %v", i, r, err)
						return
					}
					recv[i].Add(1)
				}
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	rec := blockErrorRecord(record.BlockErrorIO, 8)
	minRecv := func() int64 {
		m := recv[0].Load()
		for i := 1; i < clients; i++ {
			m = min(m, recv[i].Load())
		}
		return m
	}
	b.ReportAllocs()
	b.ResetTimer()
	for posted := int64(0); posted < int64(b.N); {
		if posted-minRecv() >= window {
			<-progress
			continue
		}
		ip.Devices.Post(rec)
		posted++
	}
	for minRecv() < int64(b.N) {
		<-progress
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(b.N*clients)/b.Elapsed().Seconds(), "deliveries/s")
	cancel()
	for _, c := range cs {
		c.Close()
	}
	wg.Wait()
}

func benchRawPipe(b *testing.B) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_DIRECT|unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		b.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 32*os.Getpagesize()); err != nil {
		b.Logf("F_SETPIPE_SZ: %v", err)
	}
	r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
	defer r.Close()
	rec := make([]byte, 16)
	record.Header{Type: record.TypeUserFirst, Info: record.MakeInfo(16, 0, 0)}.Put(rec)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for range b.N {
			if _, err := w.Write(rec); err != nil {
				b.Error(err)
				break
			}
		}
		w.Close()
	}()
	buf := make([]byte, 4096)
	n := 0
	for n < b.N {
		k, err := r.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		if k != 16 {
			b.Fatalf("read %d bytes, want one 16-byte packet", k)
		}
		n++
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
