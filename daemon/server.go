// Package daemon is watchqd: a server that hands notification queues to
// other processes as packet-mode pipes, fed by the watchq engine, its
// device source and authorised userspace publishers, under the policy of
// watchqd.conf(5).
//
// Each connection on the SOCK_SEQPACKET control socket is identified by
// SO_PEERCRED, SO_PEERGROUPS and SO_PEERSEC when it connects; the policy
// rules on those credentials. docs/protocol.md describes the protocol;
// docs/daemon.md the design: one goroutine per connection reads requests,
// one goroutine per queue moves records from the engine queue into the
// pipe, parking in the runtime's poller (epoll) while the pipe is full, so
// that a slow reader stalls only its own queue, which then loses records
// and says so in-band, exactly as the kernel's queues do.
//
// watchqd is a trust boundary: every local user may connect, so every
// resource a client can make the daemon hold is charged to the client's
// uid and bounded (policy.Limits), and checked before it is allocated.
// docs/security.md has the threat model.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// DeviceSource is what the daemon needs of the device source
// (*device.Source): watch_devices(2) on its global watch list.
type DeviceSource interface {
	// Watch adds q's watch on the device list, for watcher.
	Watch(q *watchq.Queue, tag record.Tag, watcher *watchq.Cred) error
	// Unwatch removes q's watch on the device list.
	Unwatch(q *watchq.Queue) error
}

// Config configures a Server. Per-uid limits come from the policy
// (policy.Limits); the bounds here are the daemon's own, over all users.
type Config struct {
	// Engine runs the queues and watch lists; its policy should be
	// Policy. Required.
	Engine *watchq.Engine
	// Policy decides who may publish what, reports device grants and
	// gives each client its limits. Required.
	Policy *policy.Policy
	// Devices is the device source; nil makes WatchDevices ENODEV.
	Devices DeviceSource
	// Keys is the key source; nil makes WatchKey ENODEV.
	Keys KeySource
	// KeyBackend is the backend Keys runs, a protocol.KeyBackend value,
	// reported in server-stats. (A value rather than a method of
	// KeySource, so that the daemon does not import source/keys, whose
	// guest tests use the daemon through watchqtest.)
	KeyBackend uint64
	// Mounts is the mount source; nil makes WatchMount and
	// WatchSuperblock ENODEV.
	Mounts MountSource
	// Logger receives one line per denial and per client; nil discards.
	Logger *slog.Logger
	// MaxClients bounds concurrent connections of all users; 0 means
	// 1024.
	MaxClients int
	// MaxQueues bounds the queues one connection holds; 0 means 16.
	MaxQueues int
	// MaxTotalQueues bounds the queues of all users; 0 means 16384.
	MaxTotalQueues int
	// MaxTotalPages bounds the pages (see policy.Limits.Pages) of all
	// users; 0 means 262144 (1 GiB).
	MaxTotalPages int
	// PipeSlots is how many packets (records) each pipe holds before the
	// daemon keeps records in the engine queue instead; 0 means 32. The
	// kernel uses one page per packet; each queue is charged them.
	PipeSlots int
	// HelloTimeout is how long a new connection has to say hello before
	// it is closed; 0 means 5 s.
	HelloTimeout time.Duration
	// RequestTimeout is how long a reply may wait for room in the
	// client's socket (a client that does not read its replies) before
	// the connection is closed; 0 means 10 s.
	RequestTimeout time.Duration
}

// fdReserve is how many file descriptors New keeps out of the budget for
// the listener, the poller, the device source, the logs and connections
// being refused.
const fdReserve = 64

// maxRejecting bounds the connections being refused with a reply at once;
// beyond it a refused connection is closed without one.
const maxRejecting = 16

// reclaimPages is how many pages freed trigger a return of memory to the
// system, at most once a second.
const reclaimPages = 256

// Server is a running watchqd. Its methods are safe for concurrent use.
type Server struct {
	cfg       Config            // immutable
	log       *slog.Logger      // immutable
	pub       *watchq.WatchList // publisher channels, id = record type; immutable
	pipePages int               // pages a queue's pipe is charged; immutable

	nextQueue    atomic.Uint32
	published    atomic.Uint64 // records accepted from publishers
	refused      atomic.Uint64 // requests the policy refused
	acceptErrors atomic.Uint64 // accept(2) failures, each backed off
	rejected     atomic.Uint64 // connections refused at a limit
	timedOut     atomic.Uint64 // connections closed at a deadline
	throttled    atomic.Uint64 // publishes refused for rate
	closeLost    atomic.Uint64 // records that could not reach a closing queue's pipe
	rejecting    atomic.Int32  // connections being refused with a reply

	// freedPages counts pages (and queues) freed since memory was last
	// returned to the system; reclaim is signalled past reclaimPages.
	freedPages atomic.Int64
	reclaim    chan struct{}

	amu      sync.Mutex          // guards the accounting below
	accounts map[uint32]*account // by uid
	swept    time.Time           // last sweep of idle accounts
	nconns   int                 // connections, all users
	nqueues  int                 // queues, all users
	npages   int                 // pages, all users
	nwatches int                 // watches, all users

	mu    sync.Mutex         // guards conns
	conns map[*conn]struct{} // live connections
	wg    sync.WaitGroup     // connection, queue and refusal goroutines
}

// New returns a server configured by cfg. It fits the daemon-wide bounds
// into the process's RLIMIT_NOFILE: each connection may hold its socket
// and a pipe end in flight, each queue its pipe's write end.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil || cfg.Policy == nil {
		return nil, errors.New("watchqd: Config.Engine and Config.Policy are required")
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 1024
	}
	if cfg.MaxQueues <= 0 {
		cfg.MaxQueues = 16
	}
	if cfg.MaxTotalQueues <= 0 {
		cfg.MaxTotalQueues = 16384
	}
	if cfg.MaxTotalPages <= 0 {
		cfg.MaxTotalPages = 1 << 18
	}
	if cfg.PipeSlots <= 0 {
		cfg.PipeSlots = 32
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 5 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < 1<<30 {
		budget := max(int(rl.Cur)-fdReserve, 4)
		if need := 2*cfg.MaxClients + cfg.MaxTotalQueues; need > budget {
			clients, queues := cfg.MaxClients, cfg.MaxTotalQueues
			cfg.MaxClients = max(min(cfg.MaxClients, budget/4), 1)
			cfg.MaxTotalQueues = max(min(cfg.MaxTotalQueues, budget-2*cfg.MaxClients), 1)
			log.Warn("RLIMIT_NOFILE too low for the configured bounds; lowered them", "nofile", rl.Cur,
				"max_clients", clients, "now", cfg.MaxClients, "max_total_queues", queues, "now_queues", cfg.MaxTotalQueues)
		}
	}
	// F_SETPIPE_SZ rounds up to a power of two pages.
	pipePages := 1
	for pipePages < cfg.PipeSlots {
		pipePages *= 2
	}
	return &Server{
		cfg:       cfg,
		log:       log,
		pub:       cfg.Engine.NewWatchList(watchq.Object{Kind: watchq.KindPublisher}),
		pipePages: pipePages,
		reclaim:   make(chan struct{}, 1),
		accounts:  make(map[uint32]*account),
		conns:     make(map[*conn]struct{}),
	}, nil
}

// Accept back-off, as net/http's: 5 ms doubling to 1 s while accept fails.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Serve accepts connections on l until ctx ends or l is closed, then
// closes every connection (their queues, watches and pipes go) and
// returns. A failing accept (EMFILE, ENFILE, ENOBUFS, ENOMEM,
// ECONNABORTED...) is retried after a back-off; it never ends Serve.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.reclaimer(rctx)
	}()
	var (
		err   error
		delay time.Duration
	)
	for {
		var c *net.UnixConn
		c, err = l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			s.acceptErrors.Add(1)
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			s.log.Warn("accept failed; retrying", "err", err, "in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			continue
		}
		delay = 0
		s.admit(c)
	}
	cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("watchqd: accept: %w", err)
}

// admit identifies a new connection, charges it to its uid and starts
// serving it, or refuses it.
func (s *Server) admit(nc *net.UnixConn) {
	cred, err := peerCred(nc)
	if err != nil {
		s.log.Warn("refusing client", "err", err)
		nc.Close()
		return
	}
	lim := s.cfg.Policy.Limits(cred)
	if err := s.acquireConn(cred, lim); err != nil {
		s.rejected.Add(1)
		s.refuse(nc, cred, err)
		return
	}
	c := s.newConn(nc, cred)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c.serve()
	}()
}

// refuse closes a connection refused at a limit. While few are being
// refused, it first waits (briefly) for the client's hello and answers it
// with err, so that the client learns why; otherwise it just closes.
func (s *Server) refuse(nc *net.UnixConn, cred *watchq.Cred, err error) {
	if s.rejecting.Add(1) > maxRejecting {
		s.rejecting.Add(-1)
		nc.Close()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.rejecting.Add(-1)
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(min(s.cfg.HelloTimeout, time.Second)))
		var buf [protocol.HeaderSize + 4]byte
		n, _, _, _, rerr := nc.ReadMsgUnix(buf[:], nil)
		if rerr != nil || n < protocol.HeaderSize {
			return
		}
		h, _, _ := protocol.ParseMessage(buf[:n])
		nc.WriteMsgUnix(protocol.AppendReply(nil, h.Op&^protocol.ReplyFlag, h.ID, nil, err), nil, nil)
	}()
	_, reason := protocol.ErrnoOf(err)
	s.log.Debug("refusing client", "uid", cred.UID, "pid", cred.PID, "reason", reason)
}

// freed notes pages given back, and asks for memory to be returned to the
// system once enough have been.
func (s *Server) freed(pages int) {
	if s.freedPages.Add(int64(pages)) >= reclaimPages {
		select {
		case s.reclaim <- struct{}{}:
		default:
		}
	}
}

// reclaimer returns freed memory to the system (a garbage collection and a
// scavenge, debug.FreeOSMemory) when clients have given back enough, at
// most once a second: without it the Go heap keeps what a departed
// client's queues took until the next collection, which an idle daemon
// may never start.
func (s *Server) reclaimer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reclaim:
		}
		s.freedPages.Store(0)
		debug.FreeOSMemory()
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Stats is a snapshot of the server.
type Stats struct {
	Clients   int    // connections
	Queues    int    // queues, all users
	Pages     int    // pages charged, all users
	Watches   int    // watches charged, all users
	Users     int    // uids holding a connection, queue, page or watch
	Published uint64 // records accepted from publishers
	Refused   uint64 // requests the policy refused
	// AcceptErrors counts failed accepts (each backed off); Rejected
	// connections refused at a limit; TimedOut connections closed at the
	// hello or reply deadline; Throttled publishes refused for rate;
	// CloseLost records that could not be written to a closing queue's
	// full pipe.
	AcceptErrors, Rejected, TimedOut, Throttled, CloseLost uint64
	// The bounds in force, after New fitted them into RLIMIT_NOFILE.
	MaxClients, MaxTotalQueues, MaxTotalPages int
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{Published: s.published.Load(), Refused: s.refused.Load(),
		AcceptErrors: s.acceptErrors.Load(), Rejected: s.rejected.Load(), TimedOut: s.timedOut.Load(),
		Throttled: s.throttled.Load(), CloseLost: s.closeLost.Load(),
		MaxClients: s.cfg.MaxClients, MaxTotalQueues: s.cfg.MaxTotalQueues, MaxTotalPages: s.cfg.MaxTotalPages}
	s.amu.Lock()
	st.Clients, st.Queues, st.Pages, st.Watches = s.nconns, s.nqueues, s.npages, s.nwatches
	for _, a := range s.accounts {
		if a.conns+a.queues+a.pages+a.watches > 0 {
			st.Users++
		}
	}
	s.amu.Unlock()
	return st
}

// processStats returns the daemon process's goroutines, Go heap in use,
// resident set size and open file descriptors (0 where unknown).
func processStats() (goroutines, heap, rss, fds uint64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	goroutines, heap = uint64(runtime.NumGoroutine()), ms.HeapAlloc
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		var size, res uint64
		if _, err := fmt.Sscan(string(b), &size, &res); err == nil {
			rss = res * uint64(os.Getpagesize())
		}
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = uint64(len(ents)) - 1 // less ReadDir's own
	}
	return
}
