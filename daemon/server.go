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
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/record"
)

// DeviceSource is what the daemon needs of the device source
// (*device.Source): watch_devices(2) on its global watch list.
type DeviceSource interface {
	// Watch adds q's watch on the device list, for watcher.
	Watch(q *watchq.Queue, tag record.Tag, watcher *watchq.Cred) error
	// Unwatch removes q's watch on the device list.
	Unwatch(q *watchq.Queue) error
}

// Config configures a Server.
type Config struct {
	// Engine runs the queues and watch lists; its policy should be
	// Policy. Required.
	Engine *watchq.Engine
	// Policy decides who may publish what and reports device grants.
	// Required.
	Policy *policy.Policy
	// Devices is the device source; nil makes WatchDevices ENODEV.
	Devices DeviceSource
	// Logger receives one line per denial and per client; nil discards.
	Logger *slog.Logger
	// MaxClients bounds concurrent connections; 0 means 1024.
	MaxClients int
	// MaxQueues bounds the queues one connection holds; 0 means 16.
	MaxQueues int
	// PipeSlots is how many packets (records) each pipe holds before the
	// daemon keeps records in the engine queue instead; 0 means 32. The
	// kernel uses one page per packet.
	PipeSlots int
}

// Server is a running watchqd. Its methods are safe for concurrent use.
type Server struct {
	cfg Config            // immutable
	log *slog.Logger      // immutable
	pub *watchq.WatchList // publisher channels, id = record type; immutable

	nextQueue    atomic.Uint32
	published    atomic.Uint64 // records accepted from publishers
	refused      atomic.Uint64 // requests the policy refused
	acceptErrors atomic.Uint64 // accept(2) failures, each backed off
	closeLost    atomic.Uint64 // records that could not reach a closing queue's pipe

	mu    sync.Mutex         // guards conns
	conns map[*conn]struct{} // live connections
	wg    sync.WaitGroup     // connection and queue goroutines
}

// New returns a server configured by cfg.
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
	if cfg.PipeSlots <= 0 {
		cfg.PipeSlots = 32
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:   cfg,
		log:   log,
		pub:   cfg.Engine.NewWatchList(watchq.Object{Kind: watchq.KindPublisher}),
		conns: make(map[*conn]struct{}),
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
		cn, cerr := s.newConn(c)
		if cerr != nil {
			s.log.Warn("refusing client", "err", cerr)
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			cn.serve()
		}()
	}
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

// Stats is a snapshot of the server.
type Stats struct {
	Clients   int
	Queues    int
	Published uint64
	Refused   uint64
	// AcceptErrors counts failed accepts (each backed off); CloseLost
	// records that could not be written to a closing queue's full pipe.
	AcceptErrors, CloseLost uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Clients: len(s.conns), Published: s.published.Load(), Refused: s.refused.Load(),
		AcceptErrors: s.acceptErrors.Load(), CloseLost: s.closeLost.Load()}
	for c := range s.conns {
		st.Queues += c.numQueues()
	}
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
