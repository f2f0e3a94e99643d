//go:build linux

package mount

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// stormBatch is how many bind mounts the storm keeps at once: it binds a
// tmpfs onto stormBatch directories, unmounts them all, and again (the
// kernel allows 100 000 mounts per namespace, fs.mount-max).
const stormBatch = 1000

// benchQueueNotes sizes the storm's engine queue.
const benchQueueNotes = 8192

// cpuTime is the user+system CPU time of the process (RUSAGE_SELF) or
// the calling thread (RUSAGE_THREAD).
func cpuTime(who int) time.Duration {
	var ru unix.Rusage
	unix.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// workerCPU is the source's worker thread's CPU time so far.
func workerCPU(b *testing.B, src *Source) time.Duration {
	var d time.Duration
	if err := src.do(context.Background(), func(*worker) error { d = cpuTime(unix.RUSAGE_THREAD); return nil }); err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkMountStorm runs a bind-mount storm in a private namespace: one
// thread binds a tmpfs onto 1000 directories as fast as mount(2) goes,
// unmounts them, and again, b.N mount events in all; a watch on "/" gets
// a record per event, read by a goroutine as they come. "baseline" is the
// storm with no source; "fanotify" and "mountinfo" add a source with that
// backend. Each reports events/s (storm start to the last record read),
// cpu-ns/event (the process's CPU time, all threads, kernel time included,
// over the events) and worker-ns/event (the source's worker thread's CPU
// time: reading the events, statmount, mountinfo rereads, posting);
// fanotify fails on any loss (a loss record, a fanotify
// overflow, a missing record) and reports the mounts it could not place
// (gone before their attach event was read: posted to "/" with
// triggered_on 0); mountinfo reports the fraction of events it saw (it
// coalesces what happens between two reads).
func BenchmarkMountStorm(b *testing.B) {
	for _, mode := range []string{"baseline", "fanotify", "mountinfo"} {
		b.Run(mode, func(b *testing.B) { benchStorm(b, mode) })
	}
}

func benchStorm(b *testing.B, mode string) {
	n := newPrivateNS(b)
	for i := range stormBatch {
		n.mkdir(fmt.Sprintf("d/%d", i))
	}
	n.mkdir("src")
	n.mount("tmpfs", n.p("src"), "tmpfs", 0, "")
	var (
		src   *Source
		q     *watchq.Queue
		got   atomic.Int64
		lost  atomic.Int64
		done  = make(chan struct{})
		stopR = make(chan struct{})
		// The storm's trailing unmounts (when b.N stops mid-batch) are
		// events too.
		lo, hi  = stillMounted(b.N)
		events  = int64(b.N + hi - lo)
		reached = make(chan struct{}) // closed when the reader has read events records
	)
	if mode != "baseline" {
		b := map[string]Backend{"fanotify": Fanotify, "mountinfo": Mountinfo}[mode]
		eng := watchq.NewEngine(watchq.Config{})
		var err error
		src, err = Open(context.Background(), Config{Engine: eng, Backend: b, Namespace: n.path, NoFSErrors: true})
		if err != nil {
			n.t.Fatal(err)
		}
		defer src.Close()
		// The source posts a whole fanotify read (up to ~1600 events) at a
		// time, while the storm and the worker keep both cores busy: the
		// reader needs room for a few such bursts.
		q = watchq.NewQueue(watchq.WithMaxNotes(benchQueueNotes))
		if _, err := q.SetSize(benchQueueNotes); err != nil {
			n.t.Fatal(err)
		}
		defer q.Close()
		if err := src.WatchMount(q, "/", 1, nil); err != nil {
			n.t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			defer close(done)
			buf := make([]byte, 1024*record.NoteSize)
			closed := false
			for {
				k, err := q.Read(ctx, buf)
				if err != nil {
					return
				}
				for r := range record.Records(buf[:k]) {
					if r.IsLoss() {
						l, _ := r.Loss()
						lost.Add(int64(max(l.Count, 1)))
					} else {
						got.Add(1)
					}
				}
				if got.Load()+lost.Load() >= events && !closed {
					closed = true
					close(reached)
				}
			}
		}()
		go func() { <-stopR; cancel() }()
	}
	paths := make([]string, stormBatch)
	for i := range paths {
		paths[i] = n.p(fmt.Sprintf("d/%d", i))
	}
	from := n.p("src")
	var wcpu0 time.Duration
	if src != nil {
		wcpu0 = workerCPU(b, src)
	}
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(unix.RUSAGE_SELF)
	err := n.do(func() error {
		for i := 0; i < b.N; {
			for j := 0; j < stormBatch && i < b.N; j, i = j+1, i+1 {
				if err := unix.Mount(from, paths[j], "", unix.MS_BIND, ""); err != nil {
					return err
				}
			}
			for j := 0; j < stormBatch && i < b.N; j, i = j+1, i+1 {
				if err := unix.Unmount(paths[j], 0); err != nil {
					return err
				}
			}
		}
		// Leave nothing mounted for the next round.
		lo, hi := stillMounted(b.N)
		for _, p := range paths[lo:hi] {
			if err := unix.Unmount(p, 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if src != nil {
		if err := src.Sync(context.Background()); err != nil {
			b.Fatal(err)
		}
		if mode == "fanotify" {
			// Sync has posted everything; wait for the reader to have
			// read it all.
			select {
			case <-reached:
			case <-done:
				b.Fatalf("reader ended after %d of %d records", got.Load(), events)
			}
		}
	}
	elapsed, cpu := time.Since(start), cpuTime(unix.RUSAGE_SELF)-cpu0
	b.StopTimer()
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(events), "cpu-ns/event")
	if src != nil {
		b.ReportMetric(float64((workerCPU(b, src)-wcpu0).Nanoseconds())/float64(events), "worker-ns/event")
		close(stopR)
		<-done
		st := src.Stats()
		switch mode {
		case "fanotify":
			if lost.Load() != 0 || st.Overflows != 0 || got.Load() != events || q.Stats().Lost != 0 {
				b.Fatalf("loss: %d of %d records, %d lost in the queue, %d fanotify overflows", got.Load(), events, lost.Load(), st.Overflows)
			}
			b.ReportMetric(float64(st.Unresolved)/float64(events), "unplaced/event")
		case "mountinfo":
			b.ReportMetric(float64(got.Load())/float64(events), "seen/event")
			b.ReportMetric(float64(st.Scans), "rereads")
		}
	}
}

// stillMounted says which of the storm's directories [lo, hi) are still
// mounted after n events: the last batch may have stopped half way.
func stillMounted(n int) (lo, hi int) {
	switch r := n % (2 * stormBatch); {
	case r <= stormBatch:
		return 0, r
	default:
		return r - stormBatch, stormBatch
	}
}

// BenchmarkEventPath measures the fanotify backend's userspace work for
// one attach and one detach event, without a kernel event queue: decode
// the event, statmount(2) the mount (a real one: the private namespace's
// tmpfs), update the table, route and post the record to one watching
// queue. One op is one event.
func BenchmarkEventPath(b *testing.B) {
	n := newPrivateNS(b)
	src, _ := n.open(Fanotify)
	q := watchq.NewQueue(watchq.WithMaxNotes(benchQueueNotes))
	q.SetSize(benchQueueNotes)
	defer q.Close()
	if err := src.WatchMount(q, "/", 1, nil); err != nil {
		b.Fatal(err)
	}
	err := src.do(context.Background(), func(w *worker) error {
		var real uint64
		for id, e := range w.t.mounts {
			if e.mountPoint == n.root {
				real = id
			}
		}
		si, err := w.sm.statmount(real)
		if err != nil {
			return err
		}
		// Events for a fake mount id whose statmount answers as real's.
		ev := make([]byte, 0, 80)
		for _, mask := range []uint64{unix.FAN_MNT_ATTACH, unix.FAN_MNT_DETACH} {
			var m [24]byte
			m[0], m[4], m[6] = 40, fanMetadataVersion, 24
			for i := range 8 {
				m[8+i] = byte(mask >> (8 * i))
			}
			m[16], m[17], m[18], m[19] = 0xff, 0xff, 0xff, 0xff
			info := [16]byte{unix.FAN_EVENT_INFO_TYPE_MNT, 0, 16}
			for i := range 8 {
				info[8+i] = byte(real >> (8 * i))
			}
			ev = append(append(ev, m[:]...), info[:]...)
		}
		out := make([]byte, benchQueueNotes*record.NoteSize)
		fake := si
		fake.ID = 1 << 40
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i += 2 {
			parseFanEvents(ev, func(e fanEvent) {
				switch e.mask {
				case unix.FAN_MNT_ATTACH:
					if _, err := w.sm.statmount(e.mntID); err != nil {
						b.Fatal(err)
					}
					w.t.attach(entryFrom(fake))
				default:
					w.t.detach(fake.ID)
				}
			})
			if i%1024 == 0 {
				q.TryRead(out)
			}
		}
		b.StopTimer()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkMountinfoReread measures one attribute scan of the fanotify
// backend with 1000 mounts in the namespace: pread the whole mountinfo and
// compare every line with the table.
func BenchmarkMountinfoReread(b *testing.B) {
	n := newPrivateNS(b)
	n.mkdir("src")
	n.mount("tmpfs", n.p("src"), "tmpfs", 0, "")
	for i := range stormBatch {
		n.mkdir(fmt.Sprintf("d/%d", i))
		n.mount(n.p("src"), n.p(fmt.Sprintf("d/%d", i)), "", unix.MS_BIND, "")
	}
	src, _ := n.open(Fanotify)
	err := src.do(context.Background(), func(w *worker) error {
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			w.scanAttrs()
		}
		b.StopTimer()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
