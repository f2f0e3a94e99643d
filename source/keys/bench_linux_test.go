//go:build linux

package keys

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// BenchmarkKeysPoll measures one poll pass over n watched keys (half
// keyrings, half user keys); key-ns is the cost per watched key per interval.
func BenchmarkKeysPoll(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			src, q := openBackend(b, Poll, 0, 512)
			ring := newKeyring(b, fmt.Sprintf("wq-bench-%d-%d", n, time.Now().UnixNano()))
			for i := range n {
				var id int32
				if i%2 == 0 {
					id = addKey(b, "keyring", fmt.Sprintf("r%d", i), nil, ring)
				} else {
					id = addKey(b, "user", fmt.Sprintf("k%d", i), []byte("payload"), ring)
				}
				unix.KeyctlSetperm(int(id), permAll)
				if err := src.Watch(q, id, 1, nil); err != nil {
					b.Fatal(err)
				}
			}
			p := src.impl.(*poller)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				p.pass()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/key")
		})
	}
}

// BenchmarkKeysRelay measures the kernel backend's relay of one read's
// worth of records (32 LINKED records, as a full 1-page pipe holds) into
// one watch list with two engine queues: the userspace cost per kernel
// record, without the kernel. The end-to-end figure is the guest benchmark
// BenchmarkKeysKernelEndToEnd.
func BenchmarkKeysRelay(b *testing.B) {
	s := &Source{eng: watchq.NewEngine(watchq.Config{}), gen: watchq.SystemCred, entries: map[int32]*entry{}}
	kb := &kernelBackend{s: s, expect: map[int32]int{}}
	s.impl = kb
	const serial = 1234
	e := &entry{serial: serial, wl: s.eng.NewWatchList(watchq.Object{Kind: watchq.KindKey, ID: serial})}
	s.entries[serial] = e
	for tag := range record.Tag(2) {
		q := watchq.NewQueue()
		q.SetSize(512)
		defer q.Close()
		if err := e.wl.Add(q, serial, tag, watchq.SystemCred); err != nil {
			b.Fatal(err)
		}
		go func() { // a reader keeps the queue from filling
			buf := make([]byte, 4096)
			for {
				if _, err := q.Read(b.Context(), buf); err != nil {
					return
				}
			}
		}()
	}
	var buf []byte
	for i := range 32 {
		buf, _ = record.KeyNotification{Subtype: record.KeyLinked, KeyID: serial, Aux: uint32(i)}.AppendBinary(buf)
	}
	b.ReportAllocs()
	for b.Loop() {
		kb.relay(buf)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/32, "ns/record")
}
