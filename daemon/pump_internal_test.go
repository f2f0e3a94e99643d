//go:build linux

package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// TestPumpPacksAsKernelRead: for every declared read size, the packets
// the pump writes are exactly what read(2) of a notification pipe with a
// buffer of that size (at most PIPE_BUF) returns, read after read: the
// engine's Read of a twin queue that saw the same posts, loss record
// included (160 records of mixed sizes into 128 notes), except that the
// loss record behind the newest record comes in a packet of its own, once
// the client has read that record. A record longer
// than the buffer, which the kernel's read refuses with ENOBUFS, comes
// alone. Read size 0 is the plain reader: one record per packet.
func TestPumpPacksAsKernelRead(t *testing.T) {
	const typ = 0x800001
	sizes := []int{8, 16, 24, 40, 64, 100, 127}
	rec := func(i int) []byte {
		n := sizes[i%len(sizes)]
		b := make([]byte, n)
		record.Header{Type: typ, Subtype: uint8(i), Info: record.MakeInfo(n, 0, 0)}.Put(b)
		return b
	}
	for _, readSize := range []int{0, 8, 16, 40, 100, 128, 200, 4096, 8192} {
		t.Run(fmt.Sprint(readSize), func(t *testing.T) {
			rs, err := policy.Parse(strings.NewReader("* watch=0x800001 publish=0x800001\n"), "test.conf", nil)
			if err != nil {
				t.Fatal(err)
			}
			pol := policy.New(rs)
			eng := watchq.NewEngine(watchq.Config{Policy: pol})
			s, err := New(Config{Engine: eng, Policy: pol})
			if err != nil {
				t.Fatal(err)
			}
			cred := &watchq.Cred{}
			c := s.newConn(nil, cred)
			wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindPublisher})
			wq, twin := watchq.NewQueue(), watchq.NewQueue()
			for _, q := range []*watchq.Queue{wq, twin} {
				if _, err := q.SetSize(128); err != nil {
					t.Fatal(err)
				}
				if err := wl.Add(q, typ, 1, cred); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 160 {
				wl.Post(rec(i), cred, typ)
			}

			// What the kernel's reads would return, from the twin.
			var want [][]byte
			size := min(readSize, protocol.MaxPacket)
			buf := make([]byte, protocol.MaxPacket)
			for {
				if size == 0 { // one record per read
					r, err := twin.TryRead(buf[:record.NoteSize])
					if err != nil {
						break
					}
					for rec := range record.Records(buf[:r]) {
						want = append(want, append([]byte(nil), rec...))
					}
					continue
				}
				n, err := twin.TryRead(buf[:size])
				if errors.Is(err, watchq.ErrBufferTooSmall) {
					r, err := twin.Next(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					n = copy(buf, r)
				} else if err != nil {
					break
				}
				want = append(want, append([]byte(nil), buf[:n]...))
			}
			losses := 0
			for _, w := range want {
				for r := range record.Records(w) {
					if r.IsLoss() {
						losses++
					}
				}
			}
			if len(want) < 2 || losses != 1 {
				t.Fatalf("the twin returned %d reads, %d loss records; want 2 or more and 1", len(want), losses)
			}
			// The loss is behind the newest record. The kernel's read
			// that takes that record returns the loss record with it;
			// the pump cannot know, when it writes the record, whether
			// more losses will join that loss record before the client
			// reads it, so the loss record follows once the client has
			// read the record (watchq.Holder), in a packet of its own.
			if last := want[len(want)-1]; len(last) > record.LossSize && record.Record(last[len(last)-record.LossSize:]).IsLoss() {
				want = append(want[:len(want)-1], last[:len(last)-record.LossSize], last[len(last)-record.LossSize:])
			}

			if err := s.chargeQueue(c, 1); err != nil {
				t.Fatal(err)
			}
			q, rfd, err := newQueue(c, 1, wq, 1, size)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(rfd)
			c.queues[q.id] = q
			q.start()
			defer func() {
				if c.take(q) {
					q.close(false)
				}
			}()
			got := make([]byte, 2*protocol.MaxPacket)
			for i, w := range want {
				n, err := unix.Read(rfd, got)
				if err != nil || n == 0 {
					t.Fatalf("packet %d: %d, %v", i, n, err)
				}
				if !bytes.Equal(got[:n], w) {
					t.Fatalf("packet %d is\n%x\nthe kernel's read %d returns\n%x", i, got[:n], i, w)
				}
			}
		})
	}
}
