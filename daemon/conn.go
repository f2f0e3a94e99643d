package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// replyTimeout is how long a client may leave a reply unread (its socket
// buffer full) before the daemon drops it.
const replyTimeout = 10 * time.Second

// conn is one client connection. Its requests are handled one at a time
// by serve's goroutine, the only writer of nc.
type conn struct {
	s    *Server       // immutable
	nc   *net.UnixConn // immutable
	cred *watchq.Cred  // the peer, at connect(2); immutable
	log  *slog.Logger  // immutable

	hello bool // Hello accepted; serve's goroutine only

	mu     sync.Mutex        // guards queues
	queues map[uint32]*queue // open queues by id; nil once serve is done
}

func (s *Server) newConn(nc *net.UnixConn) (*conn, error) {
	cred, err := peerCred(nc)
	if err != nil {
		return nil, err
	}
	c := &conn{s: s, nc: nc, cred: cred, queues: make(map[uint32]*queue),
		log: s.log.With("uid", cred.UID, "gid", cred.GID, "pid", cred.PID)}
	if cred.Label != "" {
		c.log = c.log.With("label", cred.Label)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) >= s.cfg.MaxClients {
		return nil, fmt.Errorf("%d clients connected already (uid %d pid %d)", len(s.conns), cred.UID, cred.PID)
	}
	s.conns[c] = struct{}{}
	return c, nil
}

func (c *conn) numQueues() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queues)
}

// serve reads and answers requests until the client goes away, then
// closes its queues: their watches are removed (silently, as when a
// notification pipe is released), what their engine queues still hold is
// written to their pipes as far as there is room, and their pipes' write
// ends are closed.
//
// Requests are read without a control buffer: file descriptors a client
// attaches are never installed in the daemon (the kernel drops them and
// sets MSG_CTRUNC), whatever the packet's length.
func (c *conn) serve() {
	c.log.Debug("client connected")
	defer func() {
		c.nc.Close()
		c.mu.Lock()
		qs := c.queues
		c.queues = nil
		c.mu.Unlock()
		for _, q := range qs {
			q.close(false)
		}
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.log.Debug("client gone", "queues", len(qs))
	}()
	buf := make([]byte, protocol.MaxRequest)
	for {
		n, _, flags, _, err := c.nc.ReadMsgUnix(buf, nil)
		if err != nil {
			return // EOF (or a zero-length packet), reset, or shutdown
		}
		var reqErr error
		if flags&unix.MSG_CTRUNC != 0 {
			reqErr = &watchq.Errno{Errno: syscall.EINVAL, Reason: "ancillary data (file descriptors) not accepted; discarded"}
		}
		if flags&unix.MSG_TRUNC != 0 {
			reqErr = &watchq.Errno{Errno: syscall.EMSGSIZE, Reason: fmt.Sprintf("message longer than %d bytes", protocol.MaxRequest)}
		}
		if err := c.handle(buf[:n], reqErr); err != nil {
			c.log.Info("dropping client", "err", err)
			return
		}
	}
}

// handle decodes and answers one request. Its error ends the connection:
// only a reply that cannot be written does.
func (c *conn) handle(msg []byte, reqErr error) error {
	h, body, err := protocol.ParseMessage(msg)
	var (
		res []byte
		fd  = -1
	)
	switch {
	case reqErr != nil:
		err = reqErr
	case err != nil:
	default:
		var req protocol.Request
		if req, err = protocol.ParseRequest(h.Op, body); err == nil {
			res, fd, err = c.do(req)
		}
	}
	if err != nil {
		errno, reason := protocol.ErrnoOf(err)
		if errno == syscall.EACCES {
			c.s.refused.Add(1)
			c.log.Warn("denied", "op", h.Op.String(), "reason", reason)
		} else {
			c.log.Debug("request failed", "op", h.Op.String(), "errno", unix.ErrnoName(errno), "reason", reason)
		}
	}
	reply := protocol.AppendReply(nil, h.Op&^protocol.ReplyFlag, h.ID, res, err)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
		defer unix.Close(fd)
	}
	c.nc.SetWriteDeadline(time.Now().Add(replyTimeout))
	if _, _, err := c.nc.WriteMsgUnix(reply, oob, nil); err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

func errProto(format string, args ...any) error {
	return &watchq.Errno{Errno: syscall.EPROTO, Reason: fmt.Sprintf(format, args...)}
}

// lookup returns the connection's queue id, or EBADF.
func (c *conn) lookup(id uint32) (*queue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q, ok := c.queues[id]; ok {
		return q, nil
	}
	return nil, &watchq.Errno{Errno: syscall.EBADF, Reason: fmt.Sprintf("no queue %d on this connection (create-queue first)", id)}
}

// take removes q from the connection's queues and reports whether it was
// there: whoever takes a queue closes it, so it is closed once.
func (c *conn) take(q *queue) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queues[q.id] != q {
		return false
	}
	delete(c.queues, q.id)
	return true
}

// release closes q, unless it is being closed already: its reader has
// closed the pipe. Called by q's watchReader goroutine.
func (c *conn) release(q *queue) {
	if c.take(q) {
		q.close(true)
		c.log.Debug("queue released: its reader closed the pipe", "queue", q.id)
	}
}

// do carries out a decoded request and returns the reply body and a file
// descriptor to pass with it (or -1), which the caller closes after
// sending.
func (c *conn) do(req protocol.Request) ([]byte, int, error) {
	if r, ok := req.(protocol.Hello); ok {
		if c.hello {
			return nil, -1, errProto("hello already exchanged")
		}
		if r.Version != protocol.Version {
			return nil, -1, &watchq.Errno{Errno: syscall.EPROTONOSUPPORT, Reason: fmt.Sprintf("protocol version %d not supported; watchqd speaks %d", r.Version, protocol.Version)}
		}
		c.hello = true
		b, _ := protocol.HelloReply{Version: protocol.Version, UID: c.cred.UID, GID: c.cred.GID,
			PID: c.cred.PID, Groups: c.cred.Groups, Label: c.cred.Label}.AppendBinary(nil)
		return b, -1, nil
	}
	if !c.hello {
		return nil, -1, errProto("%v before hello: send hello first", req.Op())
	}
	switch r := req.(type) {
	case protocol.CreateQueue:
		return c.createQueue(r)
	case protocol.SetSize:
		q, err := c.lookup(r.Queue)
		if err != nil {
			return nil, -1, err
		}
		if r.Notes > 1<<30 {
			r.Notes = 1 << 30
		}
		n, err := q.q.SetSize(int(r.Notes))
		if err != nil {
			return nil, -1, err
		}
		b, _ := protocol.QueueReply{Queue: q.id, Capacity: uint32(n)}.AppendBinary(nil)
		return b, -1, nil
	case protocol.SetFilter:
		q, err := c.lookup(r.Queue)
		if err != nil {
			return nil, -1, err
		}
		var f *record.Filter
		if len(r.Filter) > 0 {
			if f, err = record.ParseFilter(r.Filter); err != nil {
				return nil, -1, err
			}
		}
		return nil, -1, q.q.SetFilter(f)
	case protocol.WatchDevices:
		q, err := c.lookup(r.Queue)
		if err != nil {
			return nil, -1, err
		}
		tag, remove, err := record.ParseTagArg(int64(r.Tag))
		if err != nil {
			return nil, -1, err
		}
		if r.Flags != 0 {
			return nil, -1, &watchq.Errno{Errno: syscall.EINVAL, Reason: fmt.Sprintf("watch-devices: flags %#x, want 0", r.Flags)}
		}
		if c.s.cfg.Devices == nil {
			return nil, -1, &watchq.Errno{Errno: syscall.ENODEV, Reason: "watchqd runs without its device source"}
		}
		if remove {
			if err := c.s.cfg.Devices.Unwatch(q.q); err != nil {
				return nil, -1, err
			}
			b, _ := protocol.WatchReply{}.AppendBinary(nil)
			return b, -1, nil
		}
		if err := c.s.cfg.Devices.Watch(q.q, tag, c.cred); err != nil {
			return nil, -1, err
		}
		b, _ := protocol.WatchReply{Sources: c.s.cfg.Policy.Devices(c.cred)}.AppendBinary(nil)
		return b, -1, nil
	case protocol.WatchPublisher:
		q, err := c.lookup(r.Queue)
		if err != nil {
			return nil, -1, err
		}
		if _, err := record.ParsePublisherType(uint64(r.Type)); err != nil {
			return nil, -1, err
		}
		tag, remove, err := record.ParseTagArg(int64(r.Tag))
		if err != nil {
			return nil, -1, err
		}
		if remove {
			return nil, -1, c.s.pub.Remove(q.q, record.ObjectID(r.Type))
		}
		return nil, -1, c.s.pub.Add(q.q, record.ObjectID(r.Type), tag, c.cred)
	case protocol.Publish:
		t := record.Record(r.Record).Type()
		if err := c.s.cfg.Policy.PublishAllowed(c.cred, t); err != nil {
			return nil, -1, err
		}
		c.s.pub.Post(r.Record, c.cred, record.ObjectID(t))
		c.s.published.Add(1)
		return nil, -1, nil
	case protocol.StatsRequest:
		return c.stats(r)
	case protocol.ServerStatsRequest:
		return c.serverStats(r)
	case protocol.CloseQueue:
		q, err := c.lookup(r.Queue)
		if err != nil {
			return nil, -1, err
		}
		if c.take(q) { // else its reader closed it meanwhile
			q.close(false)
		}
		return nil, -1, nil
	}
	return nil, -1, &watchq.Errno{Errno: syscall.EOPNOTSUPP, Reason: fmt.Sprintf("unhandled %v", req.Op())}
}

func (c *conn) createQueue(r protocol.CreateQueue) ([]byte, int, error) {
	if c.numQueues() >= c.s.cfg.MaxQueues {
		return nil, -1, &watchq.Errno{Errno: syscall.EMFILE, Reason: fmt.Sprintf("this connection holds %d queues, the limit", c.s.cfg.MaxQueues)}
	}
	wq := watchq.NewQueue()
	capacity := 0
	if r.Size != 0 {
		var err error
		if capacity, err = wq.SetSize(int(min(r.Size, 1<<30))); err != nil {
			return nil, -1, err
		}
	}
	q, rfd, err := newQueue(c, c.s.nextQueue.Add(1), wq)
	if err != nil {
		wq.Close()
		return nil, -1, err
	}
	c.mu.Lock()
	c.queues[q.id] = q
	c.mu.Unlock()
	q.start()
	b, _ := protocol.QueueReply{Queue: q.id, Capacity: uint32(capacity)}.AppendBinary(nil)
	return b, rfd, nil
}

// stats answers StatsRequest: the caller's own queues, or every queue for
// root.
func (c *conn) stats(r protocol.StatsRequest) ([]byte, int, error) {
	var all []*queue
	s := c.s
	s.mu.Lock()
	nclients := len(s.conns)
	nqueues := 0
	for o := range s.conns {
		o.mu.Lock()
		nqueues += len(o.queues)
		if o == c || c.cred.UID == 0 {
			for _, q := range o.queues {
				all = append(all, q)
			}
		}
		o.mu.Unlock()
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b *queue) int { return int(a.id) - int(b.id) })
	st := protocol.Stats{Clients: uint32(nclients), Queues: uint32(nqueues), Total: uint32(len(all)),
		Published: s.published.Load(), Refused: s.refused.Load()}
	if s.cfg.Devices != nil {
		st.Devices = 1
	}
	if int(r.Offset) < len(all) {
		all = all[r.Offset:]
	} else {
		all = nil
	}
	for _, q := range all[:min(len(all), protocol.MaxStatsQueues)] {
		st.Entries = append(st.Entries, q.stats())
	}
	b, _ := st.AppendBinary(nil)
	return b, -1, nil
}

// serverStats answers ServerStatsRequest: for root the daemon's
// internals.
func (c *conn) serverStats(r protocol.ServerStatsRequest) ([]byte, int, error) {
	root := c.cred.UID == 0
	if r.Flags&protocol.StatsGC != 0 {
		if !root {
			return nil, -1, &watchq.Errno{Errno: syscall.EPERM, Reason: "server-stats: only root may ask for a garbage collection"}
		}
		debug.FreeOSMemory()
	}
	st := protocol.ServerStats{UID: c.cred.UID}
	if root {
		ss := c.s.Stats()
		st.Internal = true
		st.Clients, st.AllQueues = uint64(ss.Clients), uint64(ss.Queues)
		st.Goroutines, st.Heap, st.RSS, st.FDs = processStats()
		st.AcceptErrors, st.CloseLost = ss.AcceptErrors, ss.CloseLost
		st.MaxClients = uint64(c.s.cfg.MaxClients)
	}
	b, _ := st.AppendBinary(nil)
	return b, -1, nil
}
