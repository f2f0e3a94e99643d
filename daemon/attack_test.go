//go:build linux

package daemon_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
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
	"idle":    roleIdle,
	"hog":     roleHog,
	"watches": roleWatches,
	"pubrate": rolePubRate,
	"chaos":   roleChaos,
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

// roleIdle (args: socket, connections) opens connections and never says
// hello. It says "IDLE n" once n are open, then "CLOSED n" once the daemon
// has closed every one, and stays until stdin closes.
func roleIdle(args []string) int {
	out := newSayer()
	n := atoi(args[1])
	var cs []*net.UnixConn
	for range n {
		c, err := dialRawConn(args[0])
		if err != nil {
			out.say("IDLE ERR %v", err)
			return 0
		}
		cs = append(cs, c)
	}
	out.say("IDLE %d", len(cs))
	var closed atomic.Int64
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			if _, err := c.Read(make([]byte, 64)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	out.say("CLOSED %d", closed.Load())
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// errnoName is "OK" for nil, the errno's name for a daemon error, else
// the error.
func errnoName(err error) string {
	var ce *client.Error
	switch {
	case err == nil:
		return "OK"
	case errors.As(err, &ce):
		return unix.ErrnoName(ce.Errno)
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

// roleHog (args: socket, connections, size[, type]) creates queues of
// size notes on up to connections connections, moving on when one is full,
// until the daemon refuses; each watches publisher type type if given. It
// says "HOG n ERRNO reason" and keeps the queues, unread, until stdin
// closes.
func roleHog(args []string) int {
	out := newSayer()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conns, size := atoi(args[1]), atoi(args[2])
	n := 0
	var last error
	var keep []*client.Queue
Conns:
	for range conns {
		c, err := client.Dial(ctx, args[0])
		if err != nil {
			last = err
			break
		}
		defer c.Close()
		for {
			q, err := c.CreateQueue(ctx, size)
			if err != nil {
				var ce *client.Error
				if errors.As(err, &ce) && strings.Contains(ce.Reason, "this connection") {
					continue Conns
				}
				last = err
				break Conns
			}
			if len(args) > 3 {
				t, _ := strconv.ParseUint(args[3], 0, 32)
				if err := q.WatchPublisher(ctx, record.Type(t), 1); err != nil {
					last = err
					break Conns
				}
			}
			keep = append(keep, q)
			n++
		}
	}
	reason := ""
	var ce *client.Error
	if errors.As(last, &ce) {
		reason = ce.Reason
	}
	out.say("HOG %d %s %s", n, errnoName(last), reason)
	io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(keep) // an unreachable pipe's finalizer would close it, releasing its queue
	return 0
}

// roleWatches (args: socket, count, first type) watches publisher types
// first, first+1, ... on one queue until the daemon refuses or count are
// set. It says "WATCHES n ERRNO" and stays until stdin closes.
func roleWatches(args []string) int {
	out := newSayer()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, args[0])
	if err != nil {
		out.say("WATCHES 0 %s", errnoName(err))
		return 0
	}
	defer c.Close()
	count := atoi(args[1])
	first, _ := strconv.ParseUint(args[2], 0, 32)
	q, err := c.CreateQueue(ctx, 32)
	n := 0
	for err == nil && n < count {
		if err = q.WatchPublisher(ctx, record.Type(first)+record.Type(n), 1); err == nil {
			n++
		}
	}
	out.say("WATCHES %d %s", n, errnoName(err))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// rolePubRate (args: socket, type, count) publishes count records back to
// back and says "PUBRATE ok again other ms": how many were accepted, how
// many refused with EAGAIN, how many failed otherwise, and how long it
// took.
func rolePubRate(args []string) int {
	out := newSayer()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, args[0])
	if err != nil {
		out.say("PUBRATE ERR %v", err)
		return 0
	}
	defer c.Close()
	t, _ := strconv.ParseUint(args[1], 0, 32)
	count := atoi(args[2])
	ok, again, other := 0, 0, 0
	start := time.Now()
	for i := range count {
		switch err := c.Publish(ctx, pubRecord(record.Type(t), uint8(i))); {
		case err == nil:
			ok++
		case errors.Is(err, syscall.EAGAIN):
			again++
		default:
			other++
		}
	}
	out.say("PUBRATE %d %d %d %d", ok, again, other, time.Since(start).Milliseconds())
	return 0
}

// roleChaos (args: socket, seed, first type, types) does random things,
// as granted or ungranted user alike, until it is killed or stdin closes:
// connects and disconnects, creates, sizes, filters and closes queues
// (some by closing only the pipe), watches and unwatches publisher types
// from first to first+types-1, publishes bursts, reads some queues and
// leaves others full, sends garbage, zero-length packets and file
// descriptors, holds connections that never say hello, and asks for
// statistics. It says "CHAOS up" first.
func roleChaos(args []string) int {
	out := newSayer()
	seed, _ := strconv.ParseUint(args[1], 0, 64)
	first, _ := strconv.ParseUint(args[2], 0, 32)
	types := max(atoi(args[3]), 1)
	rng := newRand(seed)
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	null, _ := os.Open("/dev/null")
	rights := unix.UnixRights(int(null.Fd()), int(null.Fd()), int(null.Fd()))
	type cq struct {
		c  *client.Client
		qs []*client.Queue
	}
	var clients []*cq
	var raws []*net.UnixConn
	typ := func() record.Type { return record.Type(first) + record.Type(rng.IntN(types)) }
	out.say("CHAOS up")
	for {
		select {
		case <-stop:
			return 0
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		switch a := rng.IntN(20); {
		case a < 2 || len(clients) == 0: // connect
			if len(clients) < 6 {
				if c, err := client.Dial(ctx, args[0]); err == nil {
					clients = append(clients, &cq{c: c})
				}
			}
		case a == 2: // disconnect
			i := rng.IntN(len(clients))
			clients[i].c.Close()
			for _, q := range clients[i].qs {
				q.File().Close()
			}
			clients = append(clients[:i], clients[i+1:]...)
		case a < 6: // create a queue, sized or not, sometimes out of range
			c := clients[rng.IntN(len(clients))]
			if q, err := c.c.CreateQueue(ctx, []int{0, 1, 32, 100, 512, 600}[rng.IntN(6)]); err == nil {
				c.qs = append(c.qs, q)
			}
		case a == 19: // raw: garbage, descriptors, silence
			switch b := rng.IntN(4); b {
			case 0, 1:
				if r, err := dialRawConn(args[0]); err == nil {
					g := make([]byte, rng.IntN(protocol.MaxRequest+64))
					for j := range g {
						g[j] = byte(rng.IntN(256))
					}
					var oob []byte
					if rng.IntN(2) == 0 {
						oob = rights
					}
					r.SetDeadline(time.Now().Add(time.Second))
					rawRequest(r, protocol.OpHello, 1, u32(protocol.Version), nil)
					r.WriteMsgUnix(g, oob, nil)
					if b == 1 {
						sendEmpty(r, oob) // zero-length: the end
					}
					r.Close()
				}
			case 2:
				if len(raws) < 4 {
					if r, err := dialRawConn(args[0]); err == nil {
						raws = append(raws, r) // never says hello
					}
				}
			case 3:
				for _, r := range raws {
					r.Close()
				}
				raws = nil
			}
		default:
			c := clients[rng.IntN(len(clients))]
			if len(c.qs) == 0 {
				c.c.Publish(ctx, pubRecord(typ(), uint8(a)))
				break
			}
			i := rng.IntN(len(c.qs))
			q := c.qs[i]
			switch b := rng.IntN(12); b {
			case 0:
				q.SetSize(ctx, 1+rng.IntN(600))
			case 1:
				f := make([]byte, rng.IntN(80))
				for j := range f {
					f[j] = byte(rng.IntN(256))
				}
				if len(f) >= 8 {
					f[0], f[1], f[2], f[3] = 1, 0, 0, 0
				}
				q.SetRawFilter(ctx, f)
			case 2, 3:
				q.WatchPublisher(ctx, typ(), record.Tag(rng.IntN(256)))
			case 4:
				q.UnwatchPublisher(ctx, typ())
			case 5, 6: // a burst
				for j := range 1 + rng.IntN(60) {
					c.c.Publish(ctx, pubRecord(typ(), uint8(j)))
				}
			case 7: // read what is there
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Millisecond)
				for {
					if _, err := q.Next(rctx); err != nil {
						break
					}
				}
				rcancel()
			case 8: // close the queue
				q.Close()
				c.qs = append(c.qs[:i], c.qs[i+1:]...)
			case 9: // close only the pipe: the daemon releases the queue
				q.File().Close()
				c.qs = append(c.qs[:i], c.qs[i+1:]...)
			case 10:
				c.c.Stats(ctx)
			case 11:
				q.WatchDevices(ctx, 1)
			}
		}
		cancel()
	}
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
