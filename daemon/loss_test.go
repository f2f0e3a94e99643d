//go:build linux

package daemon_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// lossQueue opens a connection with a queue of one note (the kernel's
// 32-note page) and a device watch on it; readSize 0 is a plain reader.
// It returns the pipe's read end.
func lossQueue(t *testing.T, path string, readSize uint32) int {
	t.Helper()
	r := dialRaw(t, path)
	r.expect(t, rawMsg(uint16(protocol.OpHello), 1, u32(protocol.Version)), 0)
	body := u32(1)
	if readSize > 0 {
		body = u32(1, readSize)
	}
	qr, err := protocol.ParseQueueReply(r.expect(t, rawMsg(uint16(protocol.OpCreateQueue), 2, body), 0))
	if err != nil {
		t.Fatal(err)
	}
	r.expect(t, rawMsg(uint16(protocol.OpWatchDevices), 3, u32(qr.Queue, 3, 0)), 0)
	return r.fds[len(r.fds)-1]
}

// readStream reads packets from the blocking read end fd until it has
// seen n records (not counting loss records) and names what arrived:
// each record by its number, a loss record as L and its count.
func readStream(t *testing.T, fd, n int) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, protocol.MaxPacket)
	for got := 0; got < n; {
		p := readPacket(t, fd, buf)
		for r, err := range record.Records(p) {
			if err != nil {
				t.Fatal(err)
			}
			if l, err := r.Loss(); err == nil {
				fmt.Fprintf(&b, "L%d ", l.Count)
				continue
			}
			blk, err := r.Block()
			if err != nil {
				t.Fatalf("record %v: %v", r, err)
			}
			fmt.Fprintf(&b, "%d ", blk.Sector)
			got++
		}
	}
	return b.String()
}

// numbers names records first..last as readStream does.
func numbers(first, last int) string {
	var b strings.Builder
	for i := first; i <= last; i++ {
		fmt.Fprintf(&b, "%d ", i)
	}
	return b.String()
}

// waitPiped waits until the pipe behind read end fd holds bytes bytes:
// the pump has moved that much out of the engine queue.
func waitPiped(t *testing.T, fd, bytes int) {
	t.Helper()
	for i := 0; ; i++ {
		n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n >= bytes {
			return
		}
		if i == 20000 {
			t.Fatalf("the pipe holds %d bytes, want %d", n, bytes)
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 100_000}, nil)
	}
}

// TestLossAtKernelPosition: through watchqd a queue loses exactly where
// one notification pipe of its size would (post_one_notification flags
// the newest unread record), however far the pump has moved records into
// the client's pipe: a storm of 64 on a 1-note queue nobody reads gives
// records 0..31 and one loss record, as the kernel does; and a reader
// that read 10 of 32 makes room for exactly 10 more. Before watchqd
// counted the records in the pipe against the queue, the pipe's 32
// packets came on top of the queue's 32 notes.
func TestLossAtKernelPosition(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\n")
	post := func(first, last int) {
		for i := first; i <= last; i++ {
			ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, uint64(i)))
		}
	}
	for _, readSize := range []uint32{0, protocol.MaxPacket} {
		t.Run(fmt.Sprintf("storm/readsize=%d", readSize), func(t *testing.T) {
			fd := lossQueue(t, ip.Path, readSize)
			post(0, 31)
			waitPiped(t, fd, 1) // the pump has taken records out
			post(32, 63)
			if got, want := readStream(t, fd, 32), numbers(0, 31); got != want {
				t.Fatalf("read %s\nwant %s", got, want)
			}
			post(64, 64) // the loss record comes first, then this one only
			if got, want := readStream(t, fd, 1), "L32 64 "; got != want {
				t.Errorf("after the 32 records: %s, want %s", got, want)
			}
		})
	}
	t.Run("partial", func(t *testing.T) {
		fd := lossQueue(t, ip.Path, 0)
		post(0, 31)
		waitPiped(t, fd, 32*24) // all 32 in the pipe
		if got, want := readStream(t, fd, 10), numbers(0, 9); got != want {
			t.Fatalf("read %s, want %s", got, want)
		}
		post(32, 51) // room for 32..41; 42..51 lost behind 41
		if got, want := readStream(t, fd, 32), numbers(10, 41); got != want {
			t.Fatalf("read %s\nwant %s", got, want)
		}
		// Nothing follows 41 until the loss record, which needs no
		// later record to bring it.
		if got, want := readLoss(t, fd), "L10 "; got != want {
			t.Errorf("after 41: %s, want %s", got, want)
		}
	})
}

// readLoss reads one packet that must be a loss record alone, and names
// it as readStream does.
func readLoss(t *testing.T, fd int) string {
	t.Helper()
	p := readPacket(t, fd, make([]byte, protocol.MaxPacket))
	l, err := record.Record(p).Loss()
	if len(p) != record.LossSize || err != nil {
		t.Fatalf("read %x, want a loss record", p)
	}
	return fmt.Sprintf("L%d ", l.Count)
}
