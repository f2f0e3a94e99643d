//go:build vmtest

package keys

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
)

// BenchmarkKeysKernelVsPipe puts watchq beside the kernel facility it
// mirrors and the plain pipe both are measured against (issue 13, Must 5).
// Every iteration runs each leg once, one after the other, so that the
// guest's speed changes (TCG, a loaded host) hit all legs alike; each leg
// is timed on its own and reported per record:
//
//   - plainpipe: a 16-byte key record written to, and read from, a plain
//     pipe2(O_DIRECT) pair (the record carries a sequence number the
//     reader checks);
//   - kernelpipe: KEYCTL_UPDATE, then a read of its 16-byte record from a
//     kernel notification pipe watching the key (kernel/watch_queue.c's
//     post_one_notification, fs/pipe.c's pipe_read);
//   - watchq: KEYCTL_UPDATE, then the record through the kernel backend's
//     pipe, relay and engine to Queue.Next (BenchmarkKeysKernelEndToEnd's
//     path);
//   - keyctl: KEYCTL_UPDATE of an unwatched key, the syscall alone.
//
// Both pipes are read through os.File and the runtime poller, as any Go
// consumer reads them. Every record is checked: the right key and subtype,
// no loss record, the plain pipe's sequence in order.
func BenchmarkKeysKernelVsPipe(b *testing.B) {
	src, q := openBackend(b, Kernel, 0, 512)
	ring := newKeyring(b, "wq-bench-vs")
	kw := addKey(b, "user", "wq-bench-vs-watchq", []byte("v"), ring)
	kk := addKey(b, "user", "wq-bench-vs-kernel", []byte("v"), ring)
	ks := addKey(b, "user", "wq-bench-vs-syscall", []byte("v"), ring)
	for _, k := range []int32{kw, kk, ks} {
		must(b, "setperm", unix.KeyctlSetperm(int(k), permAll))
	}
	if err := src.Watch(q, kw, 1, nil); err != nil {
		b.Fatal(err)
	}
	kp, err := kernel.Open(0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { kp.Close() })
	must(b, "set size", kp.SetSize(256))
	must(b, "watch key", kp.WatchKey(kk, 2))

	var fds [2]int
	must(b, "pipe2", unix.Pipe2(fds[:], unix.O_DIRECT|unix.O_NONBLOCK|unix.O_CLOEXEC))
	pr := os.NewFile(uintptr(fds[0]), "plain-r")
	b.Cleanup(func() { pr.Close(); unix.Close(fds[1]) })

	payload := []byte("v")
	buf := make([]byte, 4096)
	check := func(leg string, n int, err error, key int32) {
		if err != nil {
			b.Fatalf("%s: %v", leg, err)
		}
		k, kerr := record.Record(buf[:n]).Key()
		if kerr != nil || n != record.KeyRecordSize || k.Subtype != record.KeyUpdated || k.KeyID != uint32(key) {
			b.Fatalf("%s: read %x (%+v, %v), want one UPDATED of key %d", leg, buf[:n], k, kerr, key)
		}
	}
	var seq uint32
	var plain, kpipe, wq, sys time.Duration
	b.ReportAllocs()
	for b.Loop() {
		seq++
		rec, _ := record.KeyNotification{Subtype: record.KeyUpdated, KeyID: seq}.AppendBinary(buf[:0])
		t0 := time.Now()
		if _, err := unix.Write(fds[1], rec); err != nil {
			b.Fatal(err)
		}
		n, err := pr.Read(buf)
		check("plainpipe", n, err, int32(seq))
		t1 := time.Now()
		if _, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(kk), payload, 0); err != nil {
			b.Fatal(err)
		}
		n, err = kp.Read(buf)
		check("kernelpipe", n, err, kk)
		t2 := time.Now()
		if _, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(kw), payload, 0); err != nil {
			b.Fatal(err)
		}
		r, err := q.Next(b.Context())
		n = copy(buf, r)
		check("watchq", n, err, kw)
		t3 := time.Now()
		if _, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(ks), payload, 0); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		plain += t1.Sub(t0)
		kpipe += t2.Sub(t1)
		wq += t3.Sub(t2)
		sys += t4.Sub(t3)
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	b.ReportMetric(per(plain), "ns/plainpipe")
	b.ReportMetric(per(kpipe), "ns/kernelpipe")
	b.ReportMetric(per(wq), "ns/watchq")
	b.ReportMetric(per(sys), "ns/keyctl")
	b.ReportMetric(float64(kpipe)/float64(plain), "kernelpipe/plainpipe")
	b.ReportMetric(float64(wq)/float64(kpipe), "watchq/kernelpipe")
	if s := q.Stats(); s.Lost != 0 {
		b.Fatalf("watchq queue lost %d records", s.Lost)
	}
}

// TestVMNotificationPipeMemory measures what the kernel keeps for a
// notification pipe of 256 notes, for docs/benchmarks.md ("Note memory"):
// the drop in MemFree while 512 such pipes are open, against 512 pipes
// opened but never sized, per pipe. From the source
// (kernel/watch_queue.c:watch_queue_set_size) the difference is 8 note
// pages (256 notes, 32 to a page) and a ring of 256 pipe_buffers (40 bytes
// each, a 10 KiB kcalloc in fs/pipe.c:pipe_resize_ring, which the page
// allocator serves as 16 KiB), less the 16-buffer ring the pipe started
// with.
func TestVMNotificationPipeMemory(t *testing.T) {
	const pipes = 512
	measure := func(size int) float64 {
		runtimeSettle()
		before := memFree(t)
		ps := make([]*kernel.Pipe, 0, pipes)
		for range pipes {
			p, err := kernel.Open(0)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
			if size > 0 {
				must(t, "set size", p.SetSize(size))
			}
		}
		after := memFree(t)
		for _, p := range ps {
			p.Close()
		}
		return float64(before-after) / pipes
	}
	bare := measure(0)
	sized := measure(256)
	t.Logf("per pipe: %.0f B unsized, %.0f B sized to 256 notes: %.0f B for the notes, %.1f B a note", bare, sized, sized-bare, (sized-bare)/256)
	if sized-bare < 8*4096 {
		t.Errorf("256 notes took %.0f B, less than their 8 pages", sized-bare)
	}
}

// runtimeSettle lets freed pipes and pages go back before a measurement.
func runtimeSettle() {
	time.Sleep(200 * time.Millisecond)
}

// memFree returns MemFree from /proc/meminfo, in bytes.
func memFree(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemFree:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no MemFree in /proc/meminfo")
	return 0
}
