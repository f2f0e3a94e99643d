//go:build linux

package keys

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
)

// BenchmarkWatchAs: the cost of a watch set for another process (WatchAs:
// the View check on a thread of its own with that process's credentials)
// beside an in-process Watch of the same key, both in each iteration.
// Reported: ns of each pair Watch+Unwatch (watch-ns) and WatchAs+UnwatchAs
// (watchas-ns), and their ratio.
func BenchmarkWatchAs(b *testing.B) {
	testenv.RequireRoot(b)
	src := openTracedB(b)
	ring := newKeyring(b, fmt.Sprintf("wq-bench-watchas-%d", time.Now().UnixNano()))
	w := &watchq.Cred{UID: uint32(unix.Getuid()), GID: uint32(unix.Getgid())}
	q := newBenchQueue(b)
	var tw, ta time.Duration
	buf := make([]byte, 512)
	for b.Loop() {
		t0 := time.Now()
		must(b, "watch", src.Watch(q, ring, 1, nil))
		must(b, "unwatch", src.Unwatch(q, ring))
		t1 := time.Now()
		must(b, "watchas", src.WatchAs(q, ring, 1, w))
		must(b, "unwatchas", src.UnwatchAs(q, ring, w))
		t2 := time.Now()
		tw += t1.Sub(t0)
		ta += t2.Sub(t1)
		for {
			if _, err := q.TryRead(buf); err != nil {
				break
			}
		}
	}
	b.ReportMetric(float64(tw.Nanoseconds())/float64(b.N), "watch-ns")
	b.ReportMetric(float64(ta.Nanoseconds())/float64(b.N), "watchas-ns")
	b.ReportMetric(float64(ta)/float64(tw), "ratio")
}
