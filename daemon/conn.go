package daemon

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// conn is one client connection. Its requests are handled one at a time
// by serve's goroutine, the only writer of nc.
type conn struct {
	s    *Server       // immutable
	nc   *net.UnixConn // immutable
	cred *watchq.Cred  // the peer, at connect(2); immutable
	log  *slog.Logger  // immutable

	hello bool // Hello accepted; serve's goroutine only
	// version is the protocol version the client's hello stated
	// (protocol.MinVersion..Version); serve's goroutine only.
	version uint32
	// nofile is the client's RLIMIT_NOFILE soft limit, read at hello (0:
	// unknown); serve's goroutine only.
	nofile int

	mu     sync.Mutex        // guards queues
	queues map[uint32]*queue // open queues by id; nil once serve is done
}

func (s *Server) newConn(nc *net.UnixConn, cred *watchq.Cred) *conn {
	c := &conn{s: s, nc: nc, cred: cred, queues: make(map[uint32]*queue),
		log: s.log.With("uid", cred.UID, "gid", cred.GID, "pid", cred.PID)}
	if cred.Label != "" {
		c.log = c.log.With("label", cred.Label)
	}
	return c
}

func (c *conn) numQueues() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queues)
}

// limits returns the client's limits under the policy in force, held to
// its own RLIMIT_NOFILE for queues and watches (as the kernel holds
// notification pipes and nr_watches to the caller's). Called from serve's
// goroutine only.
func (c *conn) limits() policy.Limits {
	l := c.s.cfg.Policy.Limits(c.cred)
	if c.nofile > 0 {
		l.Queues = min(l.Queues, c.nofile)
		l.Watches = min(l.Watches, c.nofile)
	}
	return l
}

// limitSource says where a limit of n on key came from, for reasons.
func (c *conn) limitSource(key string, n int) string {
	if c.nofile > 0 && n == c.nofile {
		return fmt.Sprintf("the client's RLIMIT_NOFILE, %d", c.nofile)
	}
	return fmt.Sprintf("watchqd.conf: limits %s=%d", key, n)
}

// serve reads and answers requests until the client goes away, then
// closes its queues: their watches are removed (silently, as when a
// notification pipe is released), what their engine queues still hold is
// written to their pipes as far as there is room, and their pipes' write
// ends are closed.
//
// The client must say hello within HelloTimeout of connecting. A request
// is one SOCK_SEQPACKET packet, read whole or not at all, so no request
// can be left half-read; its reply must find room in the client's socket
// within RequestTimeout.
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
		c.s.releaseConn(c.cred.UID)
		c.s.freed(1)
		c.log.Debug("client gone", "queues", len(qs))
	}()
	c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.HelloTimeout))
	buf := make([]byte, protocol.MaxRequest)
	for {
		n, _, flags, _, err := c.nc.ReadMsgUnix(buf, nil)
		if err != nil {
			// EOF (or a zero-length packet), reset, shutdown, or
			// no hello in time.
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.s.timedOut.Add(1)
				c.log.Debug("no hello in time; closing", "timeout", c.s.cfg.HelloTimeout)
			}
			return
		}
		var reqErr error
		if flags&unix.MSG_CTRUNC != 0 {
			reqErr = &watchq.Errno{Errno: syscall.EINVAL, Reason: "ancillary data (file descriptors) not accepted; discarded"}
		}
		if flags&unix.MSG_TRUNC != 0 {
			reqErr = &watchq.Errno{Errno: syscall.EMSGSIZE, Reason: fmt.Sprintf("message longer than %d bytes", protocol.MaxRequest)}
		}
		if err := c.handle(buf[:n], reqErr); err != nil {
			switch {
			case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
				c.log.Debug("client gone before its reply", "err", err)
			default:
				if errors.Is(err, os.ErrDeadlineExceeded) {
					c.s.timedOut.Add(1)
				}
				if ok, n := c.s.mayLog(c); ok {
					c.log.Info("dropping client", "err", err, "suppressed", n)
				}
			}
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
		fds []int
	)
	switch {
	case reqErr != nil:
		err = reqErr
	case err != nil:
	default:
		var req protocol.Request
		if req, err = protocol.ParseRequest(h.Op, body); err == nil {
			if r, ok := req.(protocol.CreateRing); ok && c.hello {
				res, fds, err = c.createRing(r) // ring_linux.go: four fds
			} else {
				var fd int
				if res, fd, err = c.do(req); fd >= 0 {
					fds = []int{fd}
				}
			}
		}
	}
	if err != nil {
		errno, reason := protocol.ErrnoOf(err)
		var le *limitError
		switch {
		case errno == syscall.EACCES:
			c.s.refused.Add(1)
			if ok, n := c.s.mayLog(c); ok {
				c.log.Warn("denied", "op", h.Op.String(), "reason", reason, "suppressed", n)
			}
		case errors.As(err, &le):
			if ok, n := c.s.mayLog(c); ok {
				c.log.Info("limit", "op", h.Op.String(), "errno", unix.ErrnoName(errno), "reason", reason, "suppressed", n)
			}
		default:
			c.log.Debug("request failed", "op", h.Op.String(), "errno", unix.ErrnoName(errno), "reason", reason)
		}
	}
	reply := protocol.AppendReply(nil, h.Op&^protocol.ReplyFlag, h.ID, res, err)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.RequestTimeout))
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

// errNotes is set-size's and create-queue's EINVAL for a size out of
// range, the engine's words.
func errNotes(n uint32) error {
	return &watchq.Errno{Errno: syscall.EINVAL, Reason: fmt.Sprintf("queue size %d out of range 1..%d", n, record.MaxNotes)}
}

// do carries out a decoded request and returns the reply body and a file
// descriptor to pass with it (or -1), which the caller closes after
// sending. Whatever a request makes the daemon hold is charged to the
// client's uid before it is allocated.
func (c *conn) do(req protocol.Request) ([]byte, int, error) {
	if r, ok := req.(protocol.Hello); ok {
		if c.hello {
			return nil, -1, errProto("hello already exchanged")
		}
		if r.Version < protocol.MinVersion || r.Version > protocol.Version {
			return nil, -1, &watchq.Errno{Errno: syscall.EPROTONOSUPPORT, Reason: fmt.Sprintf("protocol version %d not supported; watchqd speaks %d..%d", r.Version, protocol.MinVersion, protocol.Version)}
		}
		c.hello, c.version = true, r.Version
		c.nc.SetReadDeadline(time.Time{})
		c.nofile = clientNofile(c.cred.PID)
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
		if r.Notes < 1 || r.Notes > record.MaxNotes {
			return nil, -1, errNotes(r.Notes)
		}
		if q.q.Stats().Capacity != 0 {
			return nil, -1, watchq.ErrSizeSet
		}
		pages := pagesFor(int(r.Notes))
		if err := c.s.chargePages(c, pages); err != nil {
			return nil, -1, err
		}
		if !q.hold(pages, 0) {
			c.s.uncharge(c, 0, pages, 0)
			return nil, -1, watchq.ErrClosed
		}
		n, err := q.q.SetSize(int(r.Notes))
		if err != nil {
			q.unhold(pages, 0)
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
		q, tag, remove, err := c.watchArgs(r.Queue, r.Tag)
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
			q.unhold(0, 1)
			b, _ := protocol.WatchReply{}.AppendBinary(nil)
			return b, -1, nil
		}
		if err := c.watch(q, func() error { return c.s.cfg.Devices.Watch(q.q, tag, c.cred) }); err != nil {
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
			if err := c.s.pub.Remove(q.q, record.ObjectID(r.Type)); err != nil {
				return nil, -1, err
			}
			q.unhold(0, 1)
			return nil, -1, nil
		}
		return nil, -1, c.watch(q, func() error { return c.s.pub.Add(q.q, record.ObjectID(r.Type), tag, c.cred) })
	case protocol.Publish:
		t := record.Record(r.Record).Type()
		if err := c.s.cfg.Policy.PublishAllowed(c.cred, t); err != nil {
			return nil, -1, err
		}
		if err := c.s.takeToken(c); err != nil {
			return nil, -1, err
		}
		c.s.pub.Post(r.Record, c.cred, record.ObjectID(t))
		c.s.published.Add(1)
		return nil, -1, nil
	case protocol.WatchKey:
		return c.watchKey(r)
	case protocol.WatchMount:
		return c.mountWatch(false, r.Queue, r.Tag, r.Path)
	case protocol.WatchSuperblock:
		return c.mountWatch(true, r.Queue, r.Tag, r.Path)
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

// watch adds a watch to q with add, charged to the client's uid first
// (EAGAIN past its limit) and to q, which gives the charge back when it
// closes.
func (c *conn) watch(q *queue, add func() error) error {
	c.reclaimDeadWatches()
	if err := c.s.chargeWatch(c); err != nil {
		return err
	}
	if !q.hold(0, 1) {
		c.s.uncharge(c, 0, 0, 1)
		return watchq.ErrQueueDead
	}
	if err := add(); err != nil {
		q.unhold(0, 1)
		return err
	}
	return nil
}

// watchArgs looks up the queue and parses the tag argument (0..255 adds
// a watch, -1 removes it) that every watch request carries.
func (c *conn) watchArgs(queue uint32, tag int32) (q *queue, t record.Tag, remove bool, err error) {
	if q, err = c.lookup(queue); err != nil {
		return nil, 0, false, err
	}
	if t, remove, err = record.ParseTagArg(int64(tag)); err != nil {
		return nil, 0, false, err
	}
	return q, t, remove, nil
}

// createQueue creates a queue and its pipe. The connection's and the
// uid's queue and page limits are checked first: nothing is allocated for
// a request refused.
func (c *conn) createQueue(r protocol.CreateQueue) ([]byte, int, error) {
	if r.Size > record.MaxNotes {
		return nil, -1, errNotes(r.Size)
	}
	if r.ReadSize != 0 && c.version < 2 {
		return nil, -1, &watchq.Errno{Errno: syscall.EINVAL, Reason: fmt.Sprintf("create-queue: a read size needs protocol version 2; this connection said hello with %d", c.version)}
	}
	if c.numQueues() >= c.s.cfg.MaxQueues {
		return nil, -1, &watchq.Errno{Errno: syscall.EMFILE, Reason: fmt.Sprintf("this connection holds %d queues, the limit", c.s.cfg.MaxQueues)}
	}
	pages := c.s.pipePages + pagesFor(int(r.Size))
	if err := c.s.chargeQueue(c, pages); err != nil {
		return nil, -1, err
	}
	wq := watchq.NewQueue()
	capacity := 0
	if r.Size != 0 {
		var err error
		if capacity, err = wq.SetSize(int(r.Size)); err != nil {
			wq.Close()
			c.s.uncharge(c, 1, pages, 0)
			return nil, -1, err
		}
	}
	q, rfd, err := newQueue(c, c.s.nextQueue.Add(1), wq, pages, int(min(r.ReadSize, protocol.MaxPacket)))
	if err != nil {
		wq.Close()
		c.s.uncharge(c, 1, pages, 0)
		return nil, -1, err
	}
	c.mu.Lock()
	c.queues[q.id] = q
	c.mu.Unlock()
	q.start()
	b, _ := protocol.QueueReply{Queue: q.id, Capacity: uint32(capacity)}.AppendBinary(nil)
	return b, rfd, nil
}

// stats answers StatsRequest: the queues of every connection of the
// caller's uid (not only this connection's: `watchq stat` is a connection
// of its own), or every queue for root.
func (c *conn) stats(r protocol.StatsRequest) ([]byte, int, error) {
	var all []*queue
	s := c.s
	root := c.cred.UID == 0
	s.mu.Lock()
	for o := range s.conns {
		if !root && o.cred.UID != c.cred.UID {
			continue
		}
		o.mu.Lock()
		for _, q := range o.queues {
			all = append(all, q)
		}
		o.mu.Unlock()
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b *queue) int { return cmp.Compare(a.id, b.id) })
	ss := s.Stats()
	st := protocol.Stats{Clients: uint32(ss.Clients), Queues: uint32(ss.Queues), Total: uint32(len(all)),
		Published: ss.Published, Refused: ss.Refused}
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
	if r.Flags&protocol.StatsCounters != 0 {
		st.Counters = s.Counters()
	}
	b, _ := st.AppendBinary(nil)
	return b, -1, nil
}

// serverStats answers ServerStatsRequest: the caller's usage and limits,
// and for root the daemon's internals.
func (c *conn) serverStats(r protocol.ServerStatsRequest) ([]byte, int, error) {
	root := c.cred.UID == 0
	if r.Flags&protocol.StatsGC != 0 {
		if !root {
			return nil, -1, &watchq.Errno{Errno: syscall.EPERM, Reason: "server-stats: only root may ask for a garbage collection"}
		}
		debug.FreeOSMemory()
	}
	conns, queues, pages, watches := c.s.usage(c.cred.UID)
	lim := c.limits()
	st := protocol.ServerStats{UID: c.cred.UID,
		Connections: uint64(conns), Queues: uint64(queues), Pages: uint64(pages), Watches: uint64(watches),
		MaxConnections: uint64(lim.Connections), MaxQueues: uint64(lim.Queues), MaxPages: uint64(lim.Pages),
		MaxWatches: uint64(lim.Watches), PublishRate: uint64(lim.PublishRate), PublishBurst: uint64(lim.PublishBurst),
		KeyBackend: c.s.keyBackend()}
	if root {
		ss := c.s.Stats()
		st.Internal = true
		st.Clients, st.AllQueues, st.AllPages, st.AllWatches, st.Users = uint64(ss.Clients), uint64(ss.Queues), uint64(ss.Pages), uint64(ss.Watches), uint64(ss.Users)
		st.Goroutines, st.Heap, st.RSS, st.FDs = processStats()
		st.AcceptErrors, st.Rejected, st.TimedOut, st.Throttled, st.CloseLost = ss.AcceptErrors, ss.Rejected, ss.TimedOut, ss.Throttled, ss.CloseLost
		st.MaxClients, st.MaxAllQueues, st.MaxAllPages = uint64(ss.MaxClients), uint64(ss.MaxTotalQueues), uint64(ss.MaxTotalPages)
	}
	b, _ := st.AppendBinary(nil)
	return b, -1, nil
}

// reclaimDeadWatches gives back the charge of watches the engine has
// removed by itself since they were added, as the kernel gives a user's
// nr_watches back when a watch list dies (remove_watch_list →
// free_watch): a garbage-collected key's list, a mount watch whose mount
// is unmounted (a superblock watch when the filesystem's last mount
// goes), with no request the daemon would see. Called from serve's
// goroutine, the only one that adds watches to the connection's queues, so
// no watch is between its charge and its addition meanwhile; another
// connection of the uid reclaims its own at its next watch, or when its
// queues close.
func (c *conn) reclaimDeadWatches() {
	c.mu.Lock()
	qs := make([]*queue, 0, len(c.queues))
	for _, q := range c.queues {
		qs = append(qs, q)
	}
	c.mu.Unlock()
	for _, q := range qs {
		q.reclaimDead()
	}
}
