//go:build linux

package device_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device"
	"github.com/watchq/watchq/source/device/uevent"
	"golang.org/x/sys/unix"
)

// BenchmarkUeventParseMapPost measures the listener's per-event work after
// recvmsg: parse a kernel datagram, map it to a block record, post it to
// the device watch list with one watching queue.
func BenchmarkUeventParseMapPost(b *testing.B) {
	wl := watchq.NewEngine(watchq.Config{}).NewWatchList(device.Object)
	q := watchq.NewQueue()
	if _, err := q.SetSize(512); err != nil {
		b.Fatal(err)
	}
	if err := wl.Add(q, 0, 1, watchq.CurrentCred()); err != nil {
		b.Fatal(err)
	}
	raw := []byte("change@/devices/virtual/block/loop0\x00ACTION=change\x00DEVPATH=/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00SYNTH_UUID=0\x00MAJOR=7\x00MINOR=0\x00DEVNAME=loop0\x00DEVTYPE=disk\x00DISKSEQ=9\x00SEQNUM=4242\x00")
	var (
		e   uevent.Event
		rec [record.MaxRecordSize]byte
		out = make([]byte, 512*record.NoteSize)
	)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := uevent.Parse(&e, raw); err != nil {
			b.Fatal(err)
		}
		r, ok := device.MapUevent(&e, rec[:0], nil)
		if !ok {
			b.Fatal("no record")
		}
		wl.Post(r, watchq.SystemCred, 0)
		if i++; i%256 == 0 {
			q.TryRead(out)
		}
	}
}

// BenchmarkUeventStorm writes 50 000 synthetic "change" uevents to four
// loop devices' /sys/block/loopN/uevent from four writers as fast as they
// go, with the source at default settings, and waits until the source has
// received and posted them all. It fails on any loss and reports the rate
// the source held.
func BenchmarkUeventStorm(b *testing.B) {
	const (
		events  = 50000
		writers = 4
	)
	s := open(b, device.Config{NoBlockErrors: true, NoUSBReset: true})
	q := watch(b, s, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got sync.WaitGroup
	got.Go(func() {
		buf := make([]byte, 512*record.NoteSize)
		for ctx.Err() == nil {
			q.Read(ctx, buf)
		}
	})
	defer got.Wait()
	defer cancel()
	fds := make([]int, writers)
	for i := range fds {
		fd, err := unix.Open(fmt.Sprintf("/sys/block/loop%d/uevent", i), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		fds[i] = fd
	}
	msg := []byte("change")
	var elapsed time.Duration
	for b.Loop() {
		before := s.Stats()
		start := time.Now()
		var wg sync.WaitGroup
		for _, fd := range fds {
			wg.Go(func() {
				runtime.LockOSThread()
				for range events / writers {
					if _, err := unix.Pwrite(fd, msg, 0); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		for {
			st := s.Stats()
			if st.UeventsLost != before.UeventsLost {
				b.Fatalf("lost %d uevents (stats %+v)", st.UeventsLost-before.UeventsLost, st)
			}
			if st.Posted-before.Posted >= events {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		elapsed += time.Since(start)
	}
	st := s.Stats()
	b.ReportMetric(float64(events)*float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(st.UeventsLost), "lost")
	b.ReportMetric(float64(events), "events/op")
}
