package daemon_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// attackRoles are the child roles of hostile (or merely greedy) local
// users: each runs against the socket in args[0] and reports on stdout.
var attackRoles = map[string]func(args []string) int{
	"fdflood": roleFDFlood,
	"probe":   roleProbe,
}

// sayer prints lines to stdout, one at a time.
type sayer struct {
	mu  sync.Mutex
	out *bufio.Writer
}

func newSayer() *sayer { return &sayer{out: bufio.NewWriter(os.Stdout)} }

func (s *sayer) say(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.out, format+"\n", a...)
	s.out.Flush()
}

// dialRawConn connects to the daemon without saying hello, retrying while
// the listen backlog is full.
func dialRawConn(path string) (*net.UnixConn, error) {
	for i := 0; ; i++ {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err == nil || !errors.Is(err, syscall.EAGAIN) || i == 100 {
			return c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawRequest sends one request with oob attached and reads its reply.
func rawRequest(c *net.UnixConn, op protocol.Op, id uint32, body, oob []byte) (syscall.Errno, string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.WriteMsgUnix(protocol.AppendMessage(nil, op, id, body), oob, nil); err != nil {
		return 0, "", err
	}
	buf := make([]byte, protocol.MaxReply)
	ob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, ob)
	if err != nil {
		return 0, "", err
	}
	if oobn > 0 {
		msgs, _ := unix.ParseSocketControlMessage(ob[:oobn])
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
	_, rb, err := protocol.ParseMessage(buf[:n])
	if err != nil {
		return 0, "", err
	}
	errno, rest, err := protocol.ParseReply(rb)
	return errno, string(rest), err
}

// sendEmpty sends a zero-length packet carrying oob. (Go's WriteMsgUnix,
// like x/sys/unix's Sendmsg, sends one dummy byte instead on anything but
// a datagram socket.)
func sendEmpty(c *net.UnixConn, oob []byte) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		var msg unix.Msghdr
		if len(oob) > 0 {
			msg.Control = &oob[0]
			msg.SetControllen(len(oob))
		}
		_, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), 0)
		if e == unix.EAGAIN {
			return false
		}
		if e != 0 {
			serr = e
		}
		return true
	})
	if err == nil {
		err = serr
	}
	return err
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// roleFDFlood (args: socket, connections, workers) is a user granted
// nothing passing file descriptors: on each connection, a request and
// then a zero-length packet, each with 16 descriptors attached. It says
// "PROGRESS n" every 50 connections and "FLOOD OK n einval" at the end,
// where einval counts the requests answered with EINVAL.
func roleFDFlood(args []string) int {
	out := newSayer()
	total, workers := atoi(args[1]), atoi(args[2])
	null, err := os.Open("/dev/null")
	if err != nil {
		out.say("FLOOD ERR %v", err)
		return 0
	}
	fds := make([]int, 16)
	for i := range fds {
		fds[i] = int(null.Fd())
	}
	rights := unix.UnixRights(fds...)
	var next, done, einval atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				c, err := dialRawConn(args[0])
				if err != nil {
					failed.Store(err.Error())
					return
				}
				// A request (hello) with descriptors: refused with
				// EINVAL, none kept.
				if errno, _, err := rawRequest(c, protocol.OpHello, 1, u32(protocol.Version), rights); err == nil && errno == syscall.EINVAL {
					einval.Add(1)
				}
				// A zero-length packet with descriptors: ends the
				// session; none kept either.
				if err := sendEmpty(c, rights); err != nil {
					failed.Store(err.Error())
					return
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				c.Read(make([]byte, 16)) // the daemon's close
				c.Close()
				if n := done.Add(1); n%50 == 0 {
					out.say("PROGRESS %d", n)
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		out.say("FLOOD ERR %v", f)
		return 0
	}
	out.say("FLOOD OK %d %d", done.Load(), einval.Load())
	return 0
}

// roleProbe (args: socket, type, ms) is a granted user's whole session:
// dial, create a queue, watch type, publish a record and read it back,
// within ms milliseconds. It says "PROBE OK ms" or "PROBE ERR step
// error".
func roleProbe(args []string) int {
	out := newSayer()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(atoi(args[2]))*time.Millisecond)
	defer cancel()
	t, _ := strconv.ParseUint(args[1], 0, 32)
	c, err := client.Dial(ctx, args[0])
	if err != nil {
		out.say("PROBE ERR dial %v", err)
		return 0
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, 32)
	if err != nil {
		out.say("PROBE ERR create-queue %v", err)
		return 0
	}
	if err := q.WatchPublisher(ctx, record.Type(t), 7); err != nil {
		out.say("PROBE ERR watch %v", err)
		return 0
	}
	if err := c.Publish(ctx, pubRecord(record.Type(t), 1)); err != nil {
		out.say("PROBE ERR publish %v", err)
		return 0
	}
	r, err := q.Next(ctx)
	if err != nil || r.Type() != record.Type(t) || r.Tag() != 7 {
		out.say("PROBE ERR read %v %v", r, err)
		return 0
	}
	out.say("PROBE OK %d", time.Since(start).Milliseconds())
	return 0
}
