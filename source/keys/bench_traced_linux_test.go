//go:build linux

package keys

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkKeysTracedEndToEnd: one KEYCTL_UPDATE through the syscall
// tracepoints, the ring buffer, the relay and the engine, to a read of the
// record; records/s is the throughput. Compare with
// BenchmarkKeysTracedSyscall/update/untraced from the same run.
func BenchmarkKeysTracedEndToEnd(b *testing.B) {
	src := openTracedB(b)
	q := newBenchQueue(b)
	ring := newKeyring(b, fmt.Sprintf("wq-bench-tr-%d", time.Now().UnixNano()))
	key := addKey(b, "user", "wq-bench-tr-key", []byte("v"), ring)
	unix.KeyctlSetperm(int(key), permAll)
	if err := src.Watch(q, key, 1, nil); err != nil {
		b.Fatal(err)
	}
	payload := []byte("v")
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(key), payload, 0)
		if _, err := q.Next(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkKeysTracedSyscall is the cost the tracer adds to every process's
// key calls, watched or not: a KEYCTL_UPDATE (traced: remembered at entry,
// reported at exit) and a KEYCTL_DESCRIBE (not traced: the entry program
// only filters it), each without and with a traced source open in this
// process, which watches nothing.
func BenchmarkKeysTracedSyscall(b *testing.B) {
	ring := newKeyring(b, fmt.Sprintf("wq-bench-sys-%d", time.Now().UnixNano()))
	key := addKey(b, "user", "wq-bench-sys-key", []byte("v"), ring)
	unix.KeyctlSetperm(int(key), permAll)
	payload := []byte("v")
	buf := make([]byte, 256)
	ops := []struct {
		name string
		do   func()
	}{
		{"update", func() { unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(key), payload, 0) }},
		{"describe", func() { unix.KeyctlBuffer(unix.KEYCTL_DESCRIBE, int(key), buf, 0) }},
	}
	for _, op := range ops {
		b.Run(op.name+"/untraced", func(b *testing.B) {
			for b.Loop() {
				op.do()
			}
		})
		b.Run(op.name+"/traced", func(b *testing.B) {
			openTracedB(b)
			for b.Loop() {
				op.do()
			}
		})
	}
}

func openTracedB(b *testing.B) *Source {
	b.Helper()
	src, err := openTracedSource()
	if err != nil {
		b.Skipf("traced backend: %v", err)
	}
	b.Cleanup(func() { src.Close() })
	return src
}
