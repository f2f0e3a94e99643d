//go:build linux

package daemon_test

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
)

// benchRing is BenchmarkDaemonDelivery/watchqd-ring: /watchqd's path with
// the queue delivered through a shared-memory ring (create-ring, 16 pages)
// instead of a pipe. Each record carries its sequence number in the
// sector field; the consumer checks every one (none lost, none
// reordered).
func benchRing(b *testing.B) {
	ip := startInProcess(b, "* watch=devices\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.Dial(ctx, ip.Path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	q, err := c.CreateRingQueue(ctx, 512, client.DefaultRingPages)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := q.WatchDevices(ctx, 0); err != nil {
		b.Fatal(err)
	}
	// window (as /watchqd) keeps the records in flight within what the
	// engine queue holds alone: the pump may be descheduled while they
	// are posted.
	var recv atomic.Int64
	var failed atomic.Bool
	progress := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			failed.Store(true) // unblocks the poster if this ends early
			select {
			case progress <- struct{}{}:
			default:
			}
		}()
		buf := make([]byte, 4096)
		next := uint64(0)
		for {
			n, err := q.Read(ctx, buf)
			if err != nil {
				return
			}
			k := int64(0)
			for r, err := range record.Records(buf[:n]) {
				if err != nil || r.Type() != record.TypeBlock || len(r) < record.BlockRecordSize {
					b.Errorf("record %d: %v %v", next, r, err)
					return
				}
				if s := binary.LittleEndian.Uint64(r[16:]); s != next {
					b.Errorf("record %d arrived as number %d (lost or reordered)", s, next)
					return
				}
				next++
				k++
			}
			recv.Add(k)
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	rec := blockErrorRecord(record.BlockErrorIO, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for posted := int64(0); posted < int64(b.N) && !failed.Load(); {
		if posted-recv.Load() >= window {
			<-progress
			continue
		}
		binary.LittleEndian.PutUint64(rec[16:], uint64(posted))
		ip.Devices.Post(rec)
		posted++
	}
	for recv.Load() < int64(b.N) && !failed.Load() {
		<-progress
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	cancel()
	c.Close()
	<-done
}
