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
	"github.com/watchq/watchq/watchqtest"
)

// TestStatsCounters: from the daemon, Stats carries the policy's class
// counts; from a daemon older than the counters section (which answers a
// stats request with flags EINVAL, as its 4-byte-only decoder did) it
// asks again without flags and returns the queues without counters.
func TestStatsCounters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	d := watchqtest.StartDaemon(t, "* watch=usb\n")
	c, err := client.Dial(ctx, d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	classes := map[string]bool{}
	for _, g := range s.Counters {
		if g.Kind == protocol.GroupClass {
			if _, ok := g.Value("posted"); ok {
				classes[g.Name] = true
			}
		}
	}
	for _, want := range []string{"usb", "block-errors", "block-lifecycle", "publisher"} {
		if !classes[want] {
			t.Errorf("no class %q with posted in %v", want, s.Counters)
		}
	}

	// An older daemon, speaking the protocol over a real socket.
	path := filepath.Join(t.TempDir(), "old.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sizes := make(chan int, 8)
	go func() {
		nc, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer nc.Close()
		buf := make([]byte, protocol.MaxRequest)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			h, body, err := protocol.ParseMessage(buf[:n])
			if err != nil {
				return
			}
			var reply []byte
			switch h.Op {
			case protocol.OpHello:
				r, _ := protocol.HelloReply{Version: protocol.Version, UID: 1000, GID: 1000, PID: 1}.AppendBinary(nil)
				reply = protocol.AppendReply(nil, h.Op, h.ID, r, nil)
			case protocol.OpStats:
				sizes <- len(body)
				if len(body) != 4 {
					reply = protocol.AppendReply(nil, h.Op, h.ID, nil, &watchq.Errno{Errno: syscall.EINVAL, Reason: "stats body is 8 bytes, want 4"})
					break
				}
				r, _ := protocol.Stats{Clients: 1, Total: 1, Entries: []protocol.QueueStats{{Queue: 7, UID: 1000}}}.AppendBinary(nil)
				reply = protocol.AppendReply(nil, h.Op, h.ID, r, nil)
			}
			nc.Write(reply)
		}
	}()
	old, err := client.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	s, err = old.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats from an older daemon: %v", err)
	}
	if s.Counters != nil || len(s.Entries) != 1 || s.Entries[0].Queue != 7 {
		t.Errorf("Stats from an older daemon: %+v", s)
	}
	if a, b := <-sizes, <-sizes; a != 8 || b != 4 {
		t.Errorf("stats requests of %d then %d bytes, want 8 then 4", a, b)
	}
}
