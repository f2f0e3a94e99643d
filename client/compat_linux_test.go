//go:build linux

package client_test

import (
	"context"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"golang.org/x/sys/unix"
)

// TestDialVersion1Daemon: against a daemon that speaks only protocol
// version 1 (it refuses hello 2 with EPROTONOSUPPORT, as watchqd before
// packed delivery did), the client says hello again with version 1 and
// creates queues with the 4-byte body, declaring no read size, so the
// daemon's one-record-per-packet pipes are read as they are.
func TestDialVersion1Daemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type seen struct {
		hellos []uint32
		create []byte // the create-queue body
	}
	done := make(chan seen, 1)
	go func() {
		var s seen
		defer func() { done <- s }()
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, protocol.MaxRequest)
		for {
			n, err := c.Read(buf)
			if err != nil || n == 0 {
				return
			}
			h, body, err := protocol.ParseMessage(buf[:n])
			if err != nil {
				return
			}
			req, err := protocol.ParseRequest(h.Op, body)
			if err != nil {
				return
			}
			var res []byte
			var rerr error
			var oob []byte
			switch r := req.(type) {
			case protocol.Hello:
				s.hellos = append(s.hellos, r.Version)
				if r.Version != 1 {
					rerr = &watchq.Errno{Errno: syscall.EPROTONOSUPPORT, Reason: "protocol version not supported; watchqd speaks 1"}
					break
				}
				res, _ = protocol.HelloReply{Version: 1}.AppendBinary(nil)
			case protocol.CreateQueue:
				s.create = append([]byte(nil), body...)
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_DIRECT|unix.O_CLOEXEC); err != nil {
					return
				}
				defer unix.Close(p[0])
				defer unix.Close(p[1])
				oob = unix.UnixRights(p[0])
				res, _ = protocol.QueueReply{Queue: 1, Capacity: 32}.AppendBinary(nil)
			default:
				rerr = &watchq.Errno{Errno: syscall.EOPNOTSUPP, Reason: "not in this test"}
			}
			if _, _, err := c.WriteMsgUnix(protocol.AppendReply(nil, h.Op, h.ID, res, rerr), oob, nil); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.CreateQueue(ctx, 32)
	if err != nil {
		t.Fatal(err)
	}
	q.File().Close()
	c.Close()
	s := <-done
	if len(s.hellos) != 2 || s.hellos[0] != protocol.Version || s.hellos[1] != 1 {
		t.Errorf("hellos %v, want [%d 1]", s.hellos, protocol.Version)
	}
	if len(s.create) != 4 {
		t.Errorf("create-queue body %x, want the 4-byte version 1 body", s.create)
	}
}
