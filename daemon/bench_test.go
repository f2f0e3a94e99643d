//go:build linux

package daemon_test

import (
	"context"
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// BenchmarkDaemonDelivery measures records per second from the daemon's
// engine to clients through their packet pipes, each variant beside the
// raw packet pipe in the same iteration: the iteration alternates chunks
// of deliveryChunk records through the variant and through the raw pipe,
// timing each, so both see the same machine (these VMs change speed every
// few minutes). Each variant reports its records/s, the raw pipe's in the
// same run (rawpipe-records/s) and their ratio (x-rawpipe: variant ÷ raw;
// over -count runs benchstat gives its spread).
//
//   - rawpipe: one 16-byte write(2) per record into a pipe2(O_DIRECT)
//     pipe with 32 slots, one read(2) per record on the other side: the
//     floor a one-record-per-packet pump is built on.
//   - watchqd: one client; each op is one 24-byte block error record
//     posted to the device watch list (policy checked), pumped into the
//     client's pipe one record per packet (client.ReadSize(0), as for a
//     plain read(2) program) and read back by package client.
//   - watchqd-packed: the same with the Go client's declared 4096-byte
//     buffer: the pump packs what it takes in one engine read into one
//     packet, the client reads one packet per read(2).
//   - watchqd-16clients: the same record fanned out to 16 packed
//     clients; deliveries/s counts every client's copy.
//   - watchqd-ring: watchqd's path with the queue delivered through a
//     shared-memory ring (create-ring, client.DefaultRingPages) instead of
//     a pipe, read with a 4096-byte buffer.
//
// Every consumer checks sequence numbers: a record lost or reordered
// fails the benchmark. The poster keeps at most window records in flight
// per client, so none is lost and the figure is sustained delivery, not
// drop rate. When the window is full it waits until every client has read
// half of it (and at the end of a chunk until they have read everything),
// woken once per wait, not once per client read.
func BenchmarkDaemonDelivery(b *testing.B) {
	b.Run("rawpipe", func(b *testing.B) {
		raw := newRawPipe(b)
		defer raw.close()
		b.ReportAllocs()
		b.ResetTimer()
		for done := 0; done < b.N; {
			n := min(deliveryChunk, b.N-done)
			raw.run(b, n)
			done += n
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("watchqd", func(b *testing.B) { benchDaemon(b, 1, pipeQueue(512, client.ReadSize(0))) })
	b.Run("watchqd-packed", func(b *testing.B) { benchDaemon(b, 1, pipeQueue(512)) })
	b.Run("watchqd-16clients", func(b *testing.B) { benchDaemon(b, 16, pipeQueue(512)) })
	b.Run("watchqd-ring", func(b *testing.B) { benchDaemon(b, 1, ringQueue(512, client.DefaultRingPages)) })
}

const (
	window        = 512  // records in flight per client at most: the queues' 512 notes
	deliveryChunk = 4096 // records per timed chunk, variant then raw pipe
)

// newQueue makes a client's queue.
type newQueue func(ctx context.Context, c *client.Client) (*client.Queue, error)

// pipeQueue makes pipe queues of size notes with opts.
func pipeQueue(size int, opts ...client.QueueOption) newQueue {
	return func(ctx context.Context, c *client.Client) (*client.Queue, error) {
		return c.CreateQueue(ctx, size, opts...)
	}
}

// ringQueue makes ring queues (create-ring) of size notes and pages data
// pages.
func ringQueue(size, pages int) newQueue {
	return func(ctx context.Context, c *client.Client) (*client.Queue, error) {
		return c.CreateRingQueue(ctx, size, pages)
	}
}

func benchDaemon(b *testing.B, clients int, create newQueue) {
	ip := startInProcess(b, "* watch=devices\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recv := make([]atomic.Int64, clients)
	// progress wakes the poster when a client has read something: the
	// poster blocks instead of spinning (a spin would take one of the
	// machine's cores from the daemon).
	progress := make(chan struct{}, 1)
	// want is what the poster waits for, 0 while it does not wait: the
	// number of records every client must have read. A client signals
	// progress only when it has read that many, so a waiting poster
	// costs one wake-up per wait, not one per client read.
	var want atomic.Int64
	var wg sync.WaitGroup
	var cs []*client.Client
	for i := range clients {
		c, err := client.Dial(ctx, ip.Path)
		if err != nil {
			b.Fatal(err)
		}
		cs = append(cs, c)
		q, err := create(ctx, c)
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
			for seq := uint64(0); ; {
				n, err := q.Read(ctx, buf)
				if err != nil {
					return
				}
				for r, err := range record.Records(buf[:n]) {
					blk, berr := r.Block()
					if err != nil || berr != nil || blk.Sector != seq {
						b.Errorf("client %d: record %v (%v, %v), want number %d", i, r, err, berr, seq)
						cancel()
						return
					}
					seq++
				}
				recv[i].Store(int64(seq)) // then load want (see wait)
				if w := want.Load(); w > 0 && int64(seq) >= w {
					select {
					case progress <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	raw := newRawPipe(b)
	defer raw.close()
	minRecv := func() int64 {
		m := recv[0].Load()
		for i := 1; i < clients; i++ {
			m = min(m, recv[i].Load())
		}
		return m
	}
	// wait blocks until every client has read n records. It stores want
	// before it looks at the clients' counts, and each client stores its
	// count before it looks at want, so one of them sees the other's
	// store (sync/atomic is sequentially consistent): no wake-up is lost.
	wait := func(n int64) {
		want.Store(n)
		defer want.Store(0)
		for minRecv() < n {
			select {
			case <-progress:
			case <-ctx.Done():
				b.Fatal("a client failed")
			}
		}
	}
	var variant, base time.Duration
	posted := int64(0)
	blk := record.BlockNotification{Subtype: record.BlockErrorIO, Dev: record.KernelDev(7, 0)}
	rec := make([]byte, 0, record.NoteSize)
	b.ReportAllocs()
	b.ResetTimer()
	for posted < int64(b.N) {
		n := min(deliveryChunk, int64(b.N)-posted)
		t0 := time.Now()
		for end := posted + n; posted < end; {
			if posted-minRecv() >= window {
				wait(posted - window/2)
				continue
			}
			blk.Sector = uint64(posted)
			rec, _ = blk.AppendBinary(rec[:0])
			ip.Devices.Post(rec)
			posted++
		}
		wait(posted)
		t1 := time.Now()
		raw.run(b, int(n))
		variant += t1.Sub(t0)
		base += time.Since(t1)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/variant.Seconds(), "records/s")
	if clients > 1 {
		b.ReportMetric(float64(b.N*clients)/variant.Seconds(), "deliveries/s")
	}
	b.ReportMetric(float64(b.N)/base.Seconds(), "rawpipe-records/s")
	b.ReportMetric(base.Seconds()/variant.Seconds(), "x-rawpipe")
	cancel()
	for _, c := range cs {
		c.Close()
	}
	wg.Wait()
}

// rawPipe is the baseline: a pipe2(O_DIRECT) pipe with 32 slots, like a
// queue's, one write(2) and one read(2) per 16-byte record, both sides in
// the runtime's poller as the daemon's pump and package client are.
type rawPipe struct {
	r, w *os.File
	seq  uint64 // the next record's number; the reading goroutine's
}

func newRawPipe(b *testing.B) *rawPipe {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_DIRECT|unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		b.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 32*os.Getpagesize()); err != nil {
		b.Logf("F_SETPIPE_SZ: %v", err)
	}
	return &rawPipe{r: os.NewFile(uintptr(p[0]), "r"), w: os.NewFile(uintptr(p[1]), "w")}
}

func (p *rawPipe) close() {
	p.r.Close()
	p.w.Close()
}

// run writes n numbered records from another goroutine and reads them
// back, checking their numbers.
func (p *rawPipe) run(b *testing.B, n int) {
	first := p.seq
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec := make([]byte, 16)
		record.Header{Type: record.TypeUserFirst, Info: record.MakeInfo(16, 0, 0)}.Put(rec)
		for i := range n {
			binary.NativeEndian.PutUint64(rec[8:], first+uint64(i))
			if _, err := p.w.Write(rec); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	var buf [4096]byte
	for range n {
		k, err := p.r.Read(buf[:])
		if err != nil {
			b.Fatal(err)
		}
		if k != 16 || binary.NativeEndian.Uint64(buf[8:]) != p.seq {
			b.Fatalf("read %d bytes, number %d; want one 16-byte packet, number %d", k, binary.NativeEndian.Uint64(buf[8:]), p.seq)
		}
		p.seq++
	}
	<-done
}
