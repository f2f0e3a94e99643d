// Package client talks to watchqd, the watchq daemon: it opens queues fed
// by the daemon's engine, sets their size and filter, watches the device
// list and publisher types, publishes records, and reads what arrives.
//
// A queue arrives as the read end of a packet-mode pipe (pipe2 with
// O_DIRECT) carrying records in the kernel's layout. The client declares
// its read buffer (protocol version 2), so the daemon packs as many whole
// records into each packet as a notification pipe's read(2) with that
// buffer would return; Queue.Read, Next and Records read it, one read(2)
// per packet, with the engine's semantics and types. A queue created with
// ReadSize(0) carries one record per packet instead, so that its fd
// (OpenFile) can be handed to a program written for the kernel's
// notification pipes.
// CreateRingQueue makes a queue delivered through a shared-memory ring
// instead (docs/protocol.md, "Shared-memory ring"): the same Read, Next
// and Records, without a system call per record.
//
//	c, err := client.Dial(ctx, client.DefaultSocket)
//	q, err := c.CreateQueue(ctx, 256)
//	_, err = q.WatchDevices(ctx, 4)
//	for rec, err := range q.Records(ctx) { ... }
//
// Errors from the daemon are *Error values wrapping the errno the kernel
// would return (errors.Is(err, syscall.EACCES)), with the daemon's reason,
// and the engine's sentinel where the refusal was one
// (errors.Is(err, watchq.ErrWatchExists)), exactly as in-process.
//
// Two ends are told apart. A queue or client this program closed reads
// (and refuses requests with) watchq.ErrClosed, which matches os.ErrClosed.
// When the daemon goes away instead -- it exited, was restarted, or
// dropped the connection -- every Read, Next, Records and request returns
// an error matching ErrDaemonGone once the records already in the pipe
// have been read: the program may Dial again and watch again (records
// posted meanwhile are lost), or end.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// DefaultSocket is where watchqd listens unless configured otherwise.
const DefaultSocket = protocol.DefaultSocket

// ErrDaemonGone is the error, matched with errors.Is, of every read and
// request after the daemon went away: it exited or was restarted (its end
// of the connection and of every queue pipe closed), or it dropped this
// client's connection. It does not match watchq.ErrClosed, which is what
// reads and requests return after this program closed the queue or the
// Client itself.
var ErrDaemonGone = errors.New("watchqd went away")

// Error is a request the daemon refused.
type Error struct {
	Op     string        // the request, e.g. "watch-devices"
	Errno  syscall.Errno // what the kernel would return
	Reason string        // the daemon's explanation
}

func (e *Error) Error() string {
	return fmt.Sprintf("watchqd: %s: %s (%s)", e.Op, e.Reason, unix.ErrnoName(e.Errno))
}

// Unwrap returns the errno and, when the daemon's refusal was one of the
// engine's sentinels, that sentinel: errors.Is(err, syscall.EBUSY) and
// errors.Is(err, watchq.ErrWatchExists) hold through the client exactly as
// they do in-process.
func (e *Error) Unwrap() []error {
	if s := watchq.Sentinel(e.Errno, e.Reason); s != nil {
		return []error{e.Errno, s}
	}
	return []error{e.Errno}
}

// Identity is how the daemon sees this client: the credentials its
// policy rules on.
type Identity struct {
	UID, GID uint32
	PID      int32
	Groups   []uint32
	Label    string // LSM label; "" when the system has none
}

// Client is a connection to watchqd. Its methods may be called from
// several goroutines; requests are sent one at a time.
type Client struct {
	conn *net.UnixConn // immutable
	id   Identity      // immutable after Dial
	// version is the protocol version the daemon accepted in hello:
	// protocol.Version, or MinVersion from an older daemon; immutable
	// after Dial.
	version uint32

	closed atomic.Bool // set by the first Close; later ones do nothing

	mu     sync.Mutex // serialises requests; guards below
	nextID uint32
	buf    []byte
	oob    []byte
}

// Dial connects to the daemon at path (DefaultSocket if empty) and
// exchanges Hello.
func Dial(ctx context.Context, path string) (*Client, error) {
	if path == "" {
		path = DefaultSocket
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("watchq client: dial %s: %w", path, err)
	}
	c := &Client{conn: nc.(*net.UnixConn), buf: make([]byte, protocol.MaxReply+1), oob: make([]byte, unix.CmsgSpace(4*4))}
	c.version = protocol.Version
	body, _, err := c.do(ctx, protocol.Hello{Version: c.version})
	if errors.Is(err, syscall.EPROTONOSUPPORT) {
		// A daemon older than packed delivery: speak version 1, whose
		// queues carry one record per packet (the connection stays
		// usable after a refused hello).
		c.version = protocol.MinVersion
		body, _, err = c.do(ctx, protocol.Hello{Version: c.version})
	}
	if err != nil {
		c.conn.Close()
		return nil, err
	}
	r, err := protocol.ParseHelloReply(body)
	if err != nil {
		c.conn.Close()
		return nil, fmt.Errorf("watchq client: %w", err)
	}
	c.id = Identity{UID: r.UID, GID: r.GID, PID: r.PID, Groups: r.Groups, Label: r.Label}
	return c, nil
}

// Identity returns the credentials the daemon saw when this client
// connected.
func (c *Client) Identity() Identity { return c.id }

// Close closes the connection. The daemon then closes every queue the
// client created: their watches go and their pipes see end of file.
// Pipes already received stay open until closed. Close is idempotent.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.conn.Close()
}

// do sends req and waits for its reply, returning the result body and any
// file descriptors that came with it.
func (c *Client) do(ctx context.Context, req protocol.Request) ([]byte, []int, error) {
	body, err := req.AppendBinary(nil)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	id := c.nextID
	defer followContext(ctx, c.conn.SetDeadline)()
	wrap := func(err error) error {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("watchq client: %v: %w", req.Op(), ctx.Err())
		case c.closed.Load():
			return fmt.Errorf("watchq client: %v: %w", req.Op(), watchq.ErrClosed)
		case connGone(err):
			return fmt.Errorf("watchq client: %v: %w (%w)", req.Op(), ErrDaemonGone, err)
		}
		return fmt.Errorf("watchq client: %v: %w", req.Op(), err)
	}
	if _, err := c.conn.Write(protocol.AppendMessage(nil, req.Op(), id, body)); err != nil {
		return nil, nil, wrap(err)
	}
	for {
		n, oobn, _, _, err := c.conn.ReadMsgUnix(c.buf, c.oob)
		if err != nil {
			return nil, nil, wrap(err)
		}
		fds := parseRights(c.oob[:oobn])
		h, rb, err := protocol.ParseMessage(c.buf[:n])
		if err != nil || h.ID != id || h.Op != req.Op()|protocol.ReplyFlag {
			// A reply to a request abandoned earlier (its context
			// ended): drop it.
			closeAll(fds)
			continue
		}
		errno, rest, err := protocol.ParseReply(rb)
		if err != nil {
			closeAll(fds)
			return nil, nil, wrap(err)
		}
		if errno != 0 {
			closeAll(fds)
			return nil, nil, &Error{Op: req.Op().String(), Errno: errno, Reason: string(rest)}
		}
		return append([]byte(nil), rest...), fds, nil
	}
}

// connGone reports whether err, from a write or read on the connection,
// says the daemon's end is gone: end of file on the SOCK_SEQPACKET socket
// (a zero-length read), EPIPE on a write, ECONNRESET.
func connGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// followContext gives a connection or file ctx's deadline through set, and
// when ctx ends, a deadline in the past, so that a blocked call returns.
// The caller calls the returned function when the call is done.
func followContext(ctx context.Context, set func(time.Time) error) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		set(d)
	} else {
		set(time.Time{})
	}
	return context.AfterFunc(ctx, func() { set(time.Unix(1, 0)) })
}

func parseRights(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// QueueOption configures a queue CreateQueue makes.
type QueueOption func(*queueConfig)

type queueConfig struct{ readSize int }

// ReadSize declares the size of the buffer the queue's reader passes to
// read(2) (protocol version 2's CreateQueue.ReadSize): the daemon then
// packs whole records into packets of up to min(n, protocol.MaxPacket)
// bytes, what a notification pipe's read(2) with that buffer returns. n 0
// asks for one record per packet, for a pipe handed to a program written
// for the kernel's notification pipes (OpenFile) whose buffer size is not
// known: a pipe2(O_DIRECT) pipe truncates a packet longer than its
// reader's buffer silently. Without this option a queue declares
// protocol.MaxPacket, the buffer Queue.Read and Next read with.
func ReadSize(n int) QueueOption {
	return func(c *queueConfig) { c.readSize = max(0, min(n, protocol.MaxPacket)) }
}

// CreateQueue asks the daemon for a new queue and receives its pipe. size
// 0 leaves the queue unsized: every record is lost until SetSize, as with
// a notification pipe before IOC_WATCH_QUEUE_SET_SIZE; otherwise the queue
// is sized at once (1..512 notes, rounded up to a multiple of 32). The
// queue's pipe carries packed packets for Queue.Read and Next unless
// ReadSize says otherwise.
func (c *Client) CreateQueue(ctx context.Context, size int, opts ...QueueOption) (*Queue, error) {
	if size < 0 || size > 1<<31-1 {
		return nil, &Error{Op: protocol.OpCreateQueue.String(), Errno: syscall.EINVAL, Reason: fmt.Sprintf("size %d out of range", size)}
	}
	cfg := queueConfig{readSize: protocol.MaxPacket}
	for _, o := range opts {
		o(&cfg)
	}
	if c.version < 2 {
		cfg.readSize = 0 // version 1 cannot declare: one record per packet
	}
	body, fds, err := c.do(ctx, protocol.CreateQueue{Size: uint32(size), ReadSize: uint32(cfg.readSize)})
	if err != nil {
		return nil, err
	}
	r, err := protocol.ParseQueueReply(body)
	if err == nil && len(fds) != 1 {
		err = fmt.Errorf("watchq client: create-queue reply carried %d fds, want 1", len(fds))
	}
	if err != nil {
		closeAll(fds)
		return nil, err
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		closeAll(fds)
		return nil, fmt.Errorf("watchq client: %w", err)
	}
	f := os.NewFile(uintptr(fds[0]), fmt.Sprintf("watchq-queue-%d", r.Queue))
	return newQueue(c, r.Queue, int(r.Capacity), f, cfg.readSize)
}

// Publish posts rec, one whole record of a publisher type
// (record.TypeUserFirst..TypeUserLast, length field equal to len(rec),
// tag 0), to every queue watching its type that the policy lets it reach.
// The daemon refuses with EACCES unless this client may publish the type,
// and with EINVAL if the record is malformed.
func (c *Client) Publish(ctx context.Context, rec []byte) error {
	if _, err := record.ParsePublished(rec); err != nil {
		return fmt.Errorf("watchq client: publish: %w", err)
	}
	_, _, err := c.do(ctx, protocol.Publish{Record: rec})
	return err
}

// Stats returns the daemon's counters and the queues the caller may see:
// those of every connection of its uid, or every client's for root. It
// asks for the sources' and classes' counters too (Stats.Counters) and goes
// without them from a daemon too old to send them.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var all *Stats
	flags := protocol.StatsCounters
	for off := uint32(0); ; {
		body, _, err := c.do(ctx, protocol.StatsRequest{Offset: off, Flags: flags})
		if e := (*Error)(nil); flags != 0 && errors.As(err, &e) && e.Errno == syscall.EINVAL {
			flags = 0 // an older daemon: the 4-byte request
			continue
		}
		if err != nil {
			return nil, err
		}
		s, err := protocol.ParseStats(body)
		if err != nil {
			return nil, fmt.Errorf("watchq client: %w", err)
		}
		if all == nil {
			all = &Stats{Clients: int(s.Clients), Queues: int(s.Queues), Devices: s.Devices != 0,
				Published: s.Published, Refused: s.Refused, Counters: s.Counters}
			flags = 0 // the counters come once
		}
		for _, e := range s.Entries {
			all.Entries = append(all.Entries, QueueStats(e))
		}
		off += uint32(len(s.Entries))
		if len(s.Entries) == 0 || off >= s.Total {
			return all, nil
		}
	}
}

// Stats is the daemon's view, from Client.Stats.
type Stats struct {
	Clients   int    // connected clients
	Queues    int    // open queues, all clients
	Devices   bool   // the device source runs
	Published uint64 // records accepted from publishers
	Refused   uint64 // requests the policy refused
	Entries   []QueueStats
	// Counters are the sources' counters and the policy's decisions by
	// record class (docs/daemon.md lists the names); nil from a daemon
	// that does not send them.
	Counters []CounterGroup
}

// CounterGroup is one source's or record class's counters.
type CounterGroup = protocol.CounterGroup

// QueueStats is one queue as the daemon sees it.
type QueueStats protocol.QueueStats
