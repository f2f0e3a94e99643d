//go:build linux

package watchqd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/daemon/protocol"
	"golang.org/x/sys/unix"
)

// fuzzServer is a daemon.Server in this process on a real socket, shared
// by every input a fuzz worker runs.
type fuzzServer struct {
	srv  *daemon.Server
	addr *net.UnixAddr
}

func newFuzzServer(f *testing.F) *fuzzServer {
	f.Helper()
	rules, err := policy.Parse(strings.NewReader("* watch=0x800000-0x8000ff publish=0x800000-0x8000ff\n"), "fuzz.conf", nil)
	if err != nil {
		f.Fatal(err)
	}
	pol := policy.New(rules)
	srv, err := daemon.New(daemon.Config{Engine: watchq.NewEngine(watchq.Config{Policy: pol}), Policy: pol,
		MaxClients: 64, MaxQueues: 4, PipeSlots: 4})
	if err != nil {
		f.Fatal(err)
	}
	addr := &net.UnixAddr{Name: filepath.Join(f.TempDir(), "watchqd.sock"), Net: "unixpacket"}
	l, err := net.ListenUnix("unixpacket", addr)
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	f.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.Error(err)
		}
	})
	return &fuzzServer{srv: srv, addr: addr}
}

// gone closes the client's connection and waits for the daemon to have
// dropped it and its queues, so that one input's teardown neither runs
// into the next one's coverage nor piles up.
func (s *fuzzServer) gone(t *testing.T, nc *net.UnixConn) {
	t.Helper()
	nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.srv.Stats()
		if st.Clients == 0 && st.Queues == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the client left, the daemon still has %d clients, %d queues", st.Clients, st.Queues)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// fuzzReply is one reply packet and the descriptors that came with it.
type fuzzReply struct {
	h     protocol.Header
	errno syscall.Errno
	rest  []byte // result or reason
	fds   []int
	eof   bool // the daemon closed the connection instead
}

// roundTrip sends msg with oob and reads the reply.
func roundTrip(t *testing.T, c *net.UnixConn, msg, oob []byte) fuzzReply {
	t.Helper()
	if err := sendMsg(c, msg, oob); err != nil {
		t.Fatalf("send %d bytes, %d of ancillary data: %v", len(msg), len(oob), err)
	}
	buf := make([]byte, protocol.MaxReply+1)
	ob := make([]byte, unix.CmsgSpace(16*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, ob)
	if errors.Is(err, io.EOF) {
		return fuzzReply{eof: true}
	}
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	var r fuzzReply
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(ob[:oobn])
		if err != nil {
			t.Fatalf("reply's ancillary data: %v", err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				t.Fatalf("reply's ancillary data: %v", err)
			}
			r.fds = append(r.fds, fds...)
		}
	}
	t.Cleanup(func() {
		for _, fd := range r.fds {
			unix.Close(fd)
		}
	})
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		t.Fatalf("reply truncated: flags %#x", flags)
	}
	var body []byte
	r.h, body, err = protocol.ParseMessage(buf[:n])
	if err != nil {
		t.Fatalf("reply %x: %v", buf[:n], err)
	}
	if r.errno, r.rest, err = protocol.ParseReply(body); err != nil {
		t.Fatalf("reply %x: %v", buf[:n], err)
	}
	return r
}

// sendMsg sends one packet of msg with oob. Unlike WriteMsgUnix (and
// unix.SendmsgN), which send a byte of their own when msg is empty and
// oob is not, it sends a zero-length packet then, as a client calling
// sendmsg(2) directly can.
func sendMsg(c *net.UnixConn, msg, oob []byte) error {
	if len(msg) > 0 || len(oob) == 0 {
		_, _, err := c.WriteMsgUnix(msg, oob, nil)
		return err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		h := unix.Msghdr{Control: &oob[0]}
		h.SetControllen(len(oob))
		_, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&h)), 0)
		if e == unix.EAGAIN {
			return false
		}
		if e != 0 {
			serr = e
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

// expectOK checks r answers a successful request op with id.
func expectOK(t *testing.T, r fuzzReply, op protocol.Op, id uint32) {
	t.Helper()
	if r.eof || r.h.Op != op|protocol.ReplyFlag || r.h.ID != id || r.errno != 0 {
		t.Fatalf("%v (id %d): reply %+v", op, id, r)
	}
}

// FuzzRequest drives the daemon's whole request path: one packet, with
// arbitrary bytes and optionally file descriptors (SCM_RIGHTS) and
// credentials (SCM_CREDENTIALS) attached, on a fresh connection, after a
// hello if asked, and after creating a queue if asked, whose id then
// replaces the packet's first body word (every queue request starts with
// it). Whatever the packet:
//
//   - the daemon answers it with exactly one reply carrying the request's
//     op and id (op 0 and id 0 when not even the header is there), or, for
//     a zero-length packet, closes the connection (docs/protocol.md; with
//     ancillary data it may answer instead);
//   - a packet that is too long is EMSGSIZE, one with descriptors EINVAL;
//     otherwise a packet the protocol decoder refuses gets the decoder's
//     errno, and any error reply carries a reason;
//   - a success reply's result decodes as package client decodes it, a
//     create-queue reply brings exactly one descriptor, the pipe's read
//     end, and no other reply brings any;
//   - every descriptor sent is closed by the time the reply comes;
//   - the connection keeps working: a stats request after it is answered;
//   - once the client closes it, the daemon drops it and its queues.
func FuzzRequest(f *testing.F) {
	srv := newFuzzServer(f)
	for _, s := range requestSeeds() {
		f.Add(s.hello, s.queue, s.creds, s.nfds, s.pkt)
	}
	ne := binary.NativeEndian
	f.Fuzz(func(t *testing.T, hello, queue, creds bool, nfds uint8, pkt []byte) {
		if len(pkt) > 64<<10 {
			return // beyond the socket's send buffer; EMSGSIZE is seen well below
		}
		nc, err := net.DialUnix("unixpacket", nil, srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.gone(t, nc)
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if hello || queue {
			r := roundTrip(t, nc, protocol.AppendMessage(nil, protocol.OpHello, 1, u32(protocol.Version)), nil)
			expectOK(t, r, protocol.OpHello, 1)
		}
		if queue {
			r := roundTrip(t, nc, protocol.AppendMessage(nil, protocol.OpCreateQueue, 2, u32(8)), nil)
			expectOK(t, r, protocol.OpCreateQueue, 2)
			qr, err := protocol.ParseQueueReply(r.rest)
			if err != nil || len(r.fds) != 1 {
				t.Fatalf("create-queue: %+v, %v, fds %v", qr, err, r.fds)
			}
			if len(pkt) >= protocol.HeaderSize+4 {
				pkt = append([]byte(nil), pkt...)
				ne.PutUint32(pkt[protocol.HeaderSize:], qr.Queue)
			}
		}

		// Descriptors to attach: nfds%33 copies of a pipe's write end.
		// Once every copy is closed its read end sees end of file.
		var oob []byte
		pr, pw := -1, -1
		if n := int(nfds % 33); n > 0 {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
				t.Fatal(err)
			}
			pr, pw = p[0], p[1]
			defer unix.Close(pr)
			fds := make([]int, n)
			for i := range fds {
				fds[i] = pw
			}
			oob = unix.UnixRights(fds...)
		}
		if creds {
			oob = append(oob, unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})...)
		}
		r := roundTrip(t, nc, pkt, oob)
		if pw >= 0 {
			unix.Close(pw)
			var b [1]byte
			if n, err := unix.Read(pr, b[:]); n != 0 || err != nil {
				leaked := closePipeCopies(t, pr)
				t.Fatalf("%d of %d descriptors sent with %d bytes left open by the daemon (read: %d, %v)", leaked, nfds%33, len(pkt), n, err)
			}
		}
		if len(pkt) == 0 {
			// Alone, it reads as end of connection; with ancillary data
			// it may be told apart, and then answered as any packet.
			if r.eof {
				return
			}
			if oob == nil {
				t.Fatalf("zero-length packet answered: %+v", r)
			}
		}
		if r.eof {
			t.Fatalf("connection closed after a %d-byte packet %x", len(pkt), pkt)
		}

		var wantOp protocol.Op
		var wantID uint32
		if len(pkt) >= protocol.HeaderSize {
			wantOp = protocol.Op(ne.Uint16(pkt)) &^ protocol.ReplyFlag
			wantID = ne.Uint32(pkt[4:])
		}
		if r.h.Op != wantOp|protocol.ReplyFlag || r.h.ID != wantID {
			t.Fatalf("reply header %+v to %x, want op %v id %d", r.h, pkt, wantOp|protocol.ReplyFlag, wantID)
		}
		if r.errno != 0 && (len(r.rest) == 0 || unix.ErrnoName(r.errno) == "") {
			t.Fatalf("error reply errno %d (%s), reason %q", r.errno, unix.ErrnoName(r.errno), r.rest)
		}
		var want syscall.Errno
		switch {
		case len(pkt) > protocol.MaxRequest:
			want = syscall.EMSGSIZE
		case nfds%33 > 0:
			want = syscall.EINVAL
		default:
			h, body, err := protocol.ParseMessage(pkt)
			if err == nil {
				_, err = protocol.ParseRequest(h.Op, body)
			}
			if err != nil {
				want, _ = protocol.ErrnoOf(err)
			}
		}
		if want != 0 && r.errno != want {
			t.Fatalf("packet %x (%d fds): errno %s %q, want %s", pkt, nfds%33, unix.ErrnoName(r.errno), r.rest, unix.ErrnoName(want))
		}
		wantFDs := 0
		if r.errno == 0 {
			if err := checkResult(wantOp, r.rest); err != nil {
				t.Fatalf("%v result %x: %v", wantOp, r.rest, err)
			}
			if wantOp == protocol.OpCreateQueue {
				wantFDs = 1
			}
		}
		if len(r.fds) != wantFDs {
			t.Fatalf("%v reply (errno %d) brought %d descriptors, want %d", wantOp, r.errno, len(r.fds), wantFDs)
		}
		if wantFDs == 1 {
			var st unix.Stat_t
			if err := unix.Fstat(r.fds[0], &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
				t.Fatalf("create-queue brought fd of mode %#o, %v; want a pipe", st.Mode, err)
			}
			if fl, err := unix.FcntlInt(uintptr(r.fds[0]), unix.F_GETFL, 0); err != nil || fl&unix.O_ACCMODE != unix.O_RDONLY {
				t.Fatalf("create-queue's pipe opened %#x, %v; want its read end", fl, err)
			}
		}

		// The connection still works.
		p := roundTrip(t, nc, protocol.AppendMessage(nil, protocol.OpStats, 0xfeed, u32(0)), nil)
		if p.eof || p.h.Op != protocol.OpStats|protocol.ReplyFlag || p.h.ID != 0xfeed {
			t.Fatalf("stats after %x: %+v", pkt, p)
		}
	})
}

func u32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.NativeEndian.AppendUint32(b, v)
	}
	return b
}

// requestSeed is one of FuzzRequest's seeds, committed as well (frozen
// bytes) as testdata/fuzz/FuzzRequest/<name>.
type requestSeed struct {
	name                string
	hello, queue, creds bool
	nfds                uint8
	pkt                 []byte
}

// requestSeeds are FuzzRequest's seeds: every request, in and out of
// order, with descriptors and credentials attached, too long, too short,
// unknown, empty.
func requestSeeds() []requestSeed {
	msg := func(op protocol.Op, body []byte) []byte { return protocol.AppendMessage(nil, op, 9, body) }
	pub := make([]byte, 16)
	copy(pub, []byte{1, 0, 0x80, 0, 16, 0, 0, 0})
	filter := append(u32(1, 0), make([]byte, 44)...)
	binary.NativeEndian.PutUint32(filter[8:], 0x800001)
	return []requestSeed{
		{"hello", false, false, false, 0, msg(protocol.OpHello, u32(protocol.Version))},
		{"hello-version-2", false, false, false, 0, msg(protocol.OpHello, u32(2))},
		{"stats-before-hello", false, false, false, 0, msg(protocol.OpStats, u32(0))},
		{"hello-twice", true, false, false, 0, msg(protocol.OpHello, u32(protocol.Version))},
		{"create-queue", true, false, false, 0, msg(protocol.OpCreateQueue, u32(64))},
		{"create-queue-unsized", true, false, false, 0, msg(protocol.OpCreateQueue, u32(0))},
		{"set-size", true, true, false, 0, msg(protocol.OpSetSize, u32(0, 32))},
		{"set-size-no-queue", true, false, false, 0, msg(protocol.OpSetSize, u32(12345, 32))},
		{"set-filter", true, true, false, 0, msg(protocol.OpSetFilter, append(u32(0), filter...))},
		{"set-filter-remove", true, true, false, 0, msg(protocol.OpSetFilter, u32(0))},
		{"watch-devices", true, true, false, 0, msg(protocol.OpWatchDevices, u32(0, 1, 0))},
		{"watch-publisher", true, true, false, 0, msg(protocol.OpWatchPublisher, u32(0, 0x800001, 2))},
		{"unwatch-publisher", true, true, false, 0, msg(protocol.OpWatchPublisher, u32(0, 0x800001, 0xffffffff))},
		{"watch-publisher-not-granted", true, true, false, 0, msg(protocol.OpWatchPublisher, u32(0, 0x900000, 2))},
		{"publish", true, false, false, 0, msg(protocol.OpPublish, pub)},
		{"stats", true, false, false, 0, msg(protocol.OpStats, u32(0))},
		{"close-queue", true, true, false, 0, msg(protocol.OpCloseQueue, u32(0))},
		{"stats-3-fds", true, false, false, 3, msg(protocol.OpStats, u32(0))},
		{"stats-creds", true, false, true, 0, msg(protocol.OpStats, u32(0))},
		{"create-queue-20-fds-creds", true, false, true, 20, msg(protocol.OpCreateQueue, u32(0))},
		{"oversized", true, false, false, 0, msg(protocol.OpHello, make([]byte, protocol.MaxRequest))},
		{"oversized-2-fds", true, false, false, 2, msg(protocol.OpPublish, make([]byte, 2*protocol.MaxRequest))},
		{"short-header", true, false, false, 0, []byte{1, 0, 0}},
		{"length-mismatch", true, false, false, 0, msg(protocol.OpStats, u32(0))[:14]},
		{"unknown-op", true, false, false, 0, msg(protocol.Op(77), nil)},
		{"reply-flag", true, false, false, 0, msg(protocol.OpStats|protocol.ReplyFlag, u32(0))},
		{"zero-length", false, false, false, 0, nil},
		{"zero-length-4-fds", true, false, false, 4, nil}, // issue 10 F1
	}
}

// checkResult decodes a success reply's result for op as package client
// does.
func checkResult(op protocol.Op, b []byte) error {
	switch op {
	case protocol.OpHello:
		r, err := protocol.ParseHelloReply(b)
		if err != nil {
			return err
		}
		if r.Version != protocol.Version || r.UID != uint32(os.Geteuid()) || r.PID != int32(os.Getpid()) {
			return fmt.Errorf("hello reply %+v: want version %d, uid %d, pid %d", r, protocol.Version, os.Geteuid(), os.Getpid())
		}
	case protocol.OpCreateQueue, protocol.OpSetSize:
		_, err := protocol.ParseQueueReply(b)
		return err
	case protocol.OpWatchDevices:
		_, err := protocol.ParseWatchReply(b)
		return err
	case protocol.OpStats:
		_, err := protocol.ParseStats(b)
		return err
	}
	return nil
}

// closePipeCopies closes every descriptor of this process on the pipe
// whose read end is pr, other than pr, and returns how many there were:
// the daemon's leaked copies of its write end.
func closePipeCopies(t *testing.T, pr int) int {
	t.Helper()
	self, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", pr))
	if err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, de := range des {
		var fd int
		if _, err := fmt.Sscan(de.Name(), &fd); err != nil || fd == pr {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + de.Name()); err == nil && l == self {
			unix.Close(fd)
			n++
		}
	}
	return n
}
