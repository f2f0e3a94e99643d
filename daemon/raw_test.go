//go:build linux

package daemon_test

import (
	"encoding/binary"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/daemon/protocol"
	"golang.org/x/sys/unix"
)

// raw is a control connection driven byte by byte.
type raw struct {
	c   *net.UnixConn
	fds []int // file descriptors received, closed at cleanup
}

func dialRaw(tb testing.TB, path string) *raw {
	tb.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		tb.Fatal(err)
	}
	r := &raw{c: c}
	tb.Cleanup(func() {
		c.Close()
		for _, fd := range r.fds {
			unix.Close(fd)
		}
	})
	return r
}

func u32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.NativeEndian.AppendUint32(b, v)
	}
	return b
}

func rawMsg(op uint16, id uint32, body []byte) []byte {
	return protocol.AppendMessage(nil, protocol.Op(op), id, body)
}

// roundTrip sends msg (with oob) and returns the reply's errno and
// result; fds that came with it are kept until the test ends.
func (r *raw) roundTripOOB(tb testing.TB, msg, oob []byte) (syscall.Errno, []byte) {
	tb.Helper()
	r.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := r.c.WriteMsgUnix(msg, oob, nil); err != nil {
		tb.Fatalf("send %x: %v", msg, err)
	}
	buf := make([]byte, protocol.MaxReply)
	ob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := r.c.ReadMsgUnix(buf, ob)
	if err != nil {
		tb.Fatalf("reply to %x: %v", msg, err)
	}
	if oobn > 0 {
		msgs, _ := unix.ParseSocketControlMessage(ob[:oobn])
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			// Keep queue pipes open: a closed read end releases
			// the queue (EPIPE).
			r.fds = append(r.fds, fds...)
		}
	}
	h, body, err := protocol.ParseMessage(buf[:n])
	if err != nil || h.Op&protocol.ReplyFlag == 0 {
		tb.Fatalf("bad reply %x to %x: %v", buf[:n], msg, err)
	}
	errno, rest, err := protocol.ParseReply(body)
	if err != nil {
		tb.Fatal(err)
	}
	if errno != 0 && len(rest) == 0 {
		tb.Errorf("error reply %v to %x has no reason", errno, msg)
	}
	return errno, rest
}

func (r *raw) roundTrip(tb testing.TB, msg []byte) (syscall.Errno, []byte) {
	tb.Helper()
	return r.roundTripOOB(tb, msg, nil)
}

func (r *raw) expect(tb testing.TB, msg []byte, want syscall.Errno) []byte {
	tb.Helper()
	got, rest := r.roundTrip(tb, msg)
	if got != want {
		tb.Fatalf("request %x: errno %v (%q), want %v", msg, got, rest, want)
	}
	return rest
}

// expectWithFD sends msg with a file descriptor attached.
func (r *raw) expectWithFD(tb testing.TB, msg []byte, want syscall.Errno) {
	tb.Helper()
	f, err := os.Open("/dev/null")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if got, rest := r.roundTripOOB(tb, msg, unix.UnixRights(int(f.Fd()))); got != want {
		tb.Fatalf("request with fd: errno %v (%q), want %v", got, rest, want)
	}
}

// createQueue creates an unsized queue and returns its id.
func (r *raw) createQueue(tb testing.TB) uint32 {
	tb.Helper()
	rest := r.expect(tb, rawMsg(2, 1000, u32(0)), 0)
	qr, err := protocol.ParseQueueReply(rest)
	if err != nil {
		tb.Fatal(err)
	}
	return qr.Queue
}
