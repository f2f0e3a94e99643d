//go:build linux

package daemon_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// packedBacklog is how many records the packing tests post before anyone
// reads: more than a pipe's 32 packets, fewer than the queue's 256 notes,
// so most of them wait in the engine queue and a packing pump must pack.
const packedBacklog = 200

// postBacklog posts packedBacklog block error records, their sectors
// numbering them.
func postBacklog(t *testing.T, post func([]byte) int) {
	t.Helper()
	for i := range packedBacklog {
		if n := post(blockErrorRecord(record.BlockErrorIO, uint64(i))); n != 1 {
			t.Fatalf("post %d reached %d queues, want 1", i, n)
		}
	}
}

// checkPackets checks the packets one reader got: whole records, at most
// limit bytes each, numbered 0..packedBacklog-1 in order, none lost. It
// returns the most records one packet held.
func checkPackets(t *testing.T, packets [][]byte, limit int) int {
	t.Helper()
	seq, most := uint64(0), 0
	for _, p := range packets {
		if len(p) > limit {
			t.Errorf("packet of %d bytes; the reader reads %d", len(p), limit)
		}
		recs := 0
		for r, err := range record.Records(p) {
			if err != nil {
				t.Fatalf("packet %x: %v", p, err)
			}
			b, err := r.Block()
			if err != nil || r.IsLoss() {
				t.Fatalf("record %v: %v (loss %v)", r, err, r.IsLoss())
			}
			if b.Sector != seq {
				t.Fatalf("record %d arrived as number %d", b.Sector, seq)
			}
			seq++
			recs++
		}
		most = max(most, recs)
	}
	if seq != packedBacklog {
		t.Errorf("%d records arrived, want %d", seq, packedBacklog)
	}
	return most
}

// readPackets reads packets from the blocking pipe end fd, each with a
// buffer larger than any packet, until n records have arrived.
func readPackets(t *testing.T, fd int, n int) [][]byte {
	t.Helper()
	var packets [][]byte
	buf := make([]byte, 2*protocol.MaxPacket)
	for got := 0; got < n; {
		p := readPacket(t, fd, buf)
		packets = append(packets, append([]byte(nil), p...))
		for range record.Records(p) {
			got++
		}
	}
	return packets
}

// readPacket reads one packet from the blocking pipe end fd into buf.
func readPacket(t *testing.T, fd int, buf []byte) []byte {
	t.Helper()
	for {
		k, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || k == 0 {
			t.Fatalf("read: %d, %v", k, err)
		}
		return buf[:k]
	}
}

// TestPackedDelivery: a queue whose reader declared its buffer gets
// packets of whole records, never longer than declared, in order and
// none lost; the old one-record-per-packet pump fails it.
func TestPackedDelivery(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []client.QueueOption
		max      int // the most bytes a packet may hold
		maxRecs  int // the most 24-byte records a packet may hold
		minPacks int // the fewest a packet must reach at least once
	}{
		{"default", nil, protocol.MaxPacket, protocol.MaxPacket / 24, 3},
		{"64", []client.QueueOption{client.ReadSize(64)}, 64, 2, 2},
		{"24", []client.QueueOption{client.ReadSize(24)}, 24, 1, 1},
		{"plain", []client.QueueOption{client.ReadSize(0)}, protocol.MaxPacket, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip := startInProcess(t, "* watch=devices\n")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, q := deviceQueue(t, ctx, ip, pipeQueue(256, tc.opts...), 3)
			postBacklog(t, ip.Devices.Post)
			f, err := q.OpenFile()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			most := checkPackets(t, readPackets(t, int(f.Fd()), packedBacklog), tc.max)
			if most > tc.maxRecs || most < tc.minPacks {
				t.Errorf("the fullest packet held %d records, want %d..%d", most, tc.minPacks, tc.maxRecs)
			}
		})
	}
}

// TestPlainReaderOnePerPacket: a reader that declared no buffer, by
// protocol version 1 or by version 2's 4-byte create-queue body, gets one
// record per packet however many wait, as from the kernel's pipe read
// with any buffer: an O_DIRECT pipe would truncate a packed packet in its
// read(2) silently. Version 1 cannot declare a read size.
func TestPlainReaderOnePerPacket(t *testing.T) {
	for _, version := range []uint32{1, protocol.Version} {
		ip := startInProcess(t, "* watch=devices\n")
		r := dialRaw(t, ip.Path)
		r.expect(t, rawMsg(uint16(protocol.OpHello), 1, u32(version)), 0)
		if version == 1 {
			r.expect(t, rawMsg(uint16(protocol.OpCreateQueue), 2, u32(256, 4096)), syscall.EINVAL)
		}
		r.expect(t, rawMsg(uint16(protocol.OpCreateQueue), 2, u32(256, 0)), syscall.EINVAL)
		qr, err := protocol.ParseQueueReply(r.expect(t, rawMsg(uint16(protocol.OpCreateQueue), 3, u32(256)), 0))
		if err != nil {
			t.Fatal(err)
		}
		r.expect(t, rawMsg(uint16(protocol.OpWatchDevices), 4, u32(qr.Queue, 3, 0)), 0)
		postBacklog(t, ip.Devices.Post)
		packets := readPackets(t, r.fds[len(r.fds)-1], packedBacklog)
		if most := checkPackets(t, packets, protocol.MaxPacket); most != 1 {
			t.Errorf("version %d: a packet held %d records, want 1", version, most)
		}
	}
}

// TestClientReadPacked: Queue.Read and Next over packed packets keep the
// engine's semantics: whole records as fit, ErrBufferTooSmall keeping the
// record, every record once and in order, then ErrClosed.
func TestClientReadPacked(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, q := deviceQueue(t, ctx, ip, pipeQueue(256), 3)
	postBacklog(t, ip.Devices.Post)
	var got []record.Record
	if n, err := q.Read(ctx, make([]byte, 10)); n != 0 || !errors.Is(err, watchq.ErrBufferTooSmall) {
		t.Fatalf("Read with 10 bytes = %d, %v; want ErrBufferTooSmall", n, err)
	}
	for i := 0; len(got) < packedBacklog; i++ {
		if i%3 == 0 {
			r, err := q.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
			continue
		}
		buf := make([]byte, 24*(i%5)+10) // 0..4 records and change
		n, err := q.Read(ctx, buf)
		if i%5 == 0 {
			if n != 0 || !errors.Is(err, watchq.ErrBufferTooSmall) {
				t.Fatalf("Read with %d bytes = %d, %v; want ErrBufferTooSmall", len(buf), n, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n%24 != 0 || n > 24*(i%5) {
			t.Fatalf("Read with %d bytes = %d", len(buf), n)
		}
		for r, err := range record.Records(buf[:n]) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
	}
	packet := []byte{}
	for _, r := range got {
		packet = append(packet, r...)
	}
	checkPackets(t, [][]byte{packet}, len(packet))
	q.Close()
	if _, err := q.Read(ctx, make([]byte, 64)); !errors.Is(err, watchq.ErrClosed) || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
}

// TestClientReadContext: a blocked Read returns when its context ends,
// and the next Read, with another context, blocks and reads again: the
// pipe's deadline follows whichever context the reader passes, though it
// is armed once for a reader passing the same one.
func TestClientReadContext(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, q := deviceQueue(t, ctx, ip, pipeQueue(32), 3)
	buf := make([]byte, 256)
	for i := range 3 {
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := q.Read(rctx, buf)
			done <- err
		}()
		rcancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: Read after cancel = %v, want context.Canceled", i, err)
		}
		// The same context, read after read, then a record.
		for range 2 {
			if _, err := q.Read(rctx, buf); !errors.Is(err, context.Canceled) {
				t.Fatalf("round %d: Read with a cancelled context = %v", i, err)
			}
		}
		ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, uint64(i)))
		n, err := q.Read(ctx, buf)
		if err != nil || n != 24 {
			t.Fatalf("round %d: Read = %d, %v; want the record", i, n, err)
		}
	}
}
