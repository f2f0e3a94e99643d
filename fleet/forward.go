package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
)

// Defaults of Config.
const (
	DefaultDir        = "/var/lib/watchq/forward"
	DefaultBacklog    = 64 << 20 // bytes
	DefaultQueueSize  = 512      // notes
	DefaultWindow     = 4096     // messages awaiting their acknowledgement
	DefaultAckTimeout = 5 * time.Second
)

// Config configures a Forwarder.
type Config struct {
	// Socket is watchqd's socket (client.DefaultSocket if empty).
	Socket string
	// Devices are the device classes to forward: any of ClassUSB,
	// ClassBlockError, ClassBlockLifecycle. watchqd's policy decides
	// what the forwarder actually receives, as for any client.
	Devices []Class
	// Publishers are the publisher types to forward.
	Publishers []record.Type
	// QueueSize is the watchqd queue's size in notes (default 512).
	QueueSize int

	// Host names this host (os.Hostname if empty); its subject token is
	// HostToken(Host).
	Host string
	// BootID is the kernel's boot id (read from
	// /proc/sys/kernel/random/boot_id if empty).
	BootID string

	// Dir holds the backlog (DefaultDir if empty).
	Dir string
	// Backlog bounds the backlog's size on disk in bytes (DefaultBacklog
	// if 0; at least MinBacklog).
	Backlog int64

	// NATS is how to reach the servers; NATS.URL is required.
	NATS NATS
	// Prefix is the subjects' first token (DefaultPrefix if empty).
	Prefix string
	// Stream is the stream the subjects belong to: publishes are
	// acknowledged only by it (DefaultStream if empty).
	Stream string
	// CreateStream creates the stream (StreamConfig) if it does not
	// exist, instead of waiting for an administrator to.
	CreateStream bool

	// Window bounds the messages published and not yet acknowledged
	// (DefaultWindow if 0; rounded up to a power of two).
	Window int
	// AckTimeout is how long an acknowledgement may take before the
	// forwarder publishes again from the first unacknowledged record
	// (DefaultAckTimeout if 0).
	AckTimeout time.Duration

	// Logger receives the forwarder's log (slog.Default if nil).
	Logger *slog.Logger
}

// Stats are a forwarder's counters.
type Stats struct {
	Watching  bool   // the forwarder's watches on watchqd are in place
	Read      uint64 // records read from the watchqd queue (not counting loss records)
	QueueLost uint64 // records the watchqd queue lost, as its loss records count them
	Spooled   uint64 // the highest sequence assigned
	Acked     uint64 // every sequence up to this one is in the stream
	Dropped   uint64 // records the full backlog did not take (each is in a loss record)
	Published uint64 // publishes, replays included
	Resends   uint64 // times publishing restarted from the first unacknowledged record
	Backlog   int64  // bytes of the backlog on disk
}

// Forwarder forwards a host's records from watchqd to a JetStream stream.
// It is a client of watchqd like any other: the daemon's policy decides
// what it may watch.
type Forwarder struct {
	cfg    Config
	log    *slog.Logger
	host   string // Config.Host
	token  string // its subject token
	sp     *spool
	window uint64

	read, queueLost, published, resends atomic.Uint64
	ackedCopy                           atomic.Uint64 // acked, for Stats
	watching                            atomic.Bool

	// Publisher state, shared with nats.go's acknowledgement callbacks.
	pmu    sync.Mutex
	acked  uint64      // every sequence up to this is in the stream
	done   []bool      // [seq % window]: acknowledged, ahead of acked
	slot   []*nats.Msg // [seq % window]: the message last published for seq
	failed error       // set by a failure of a message of the current round
	high   uint64      // the highest sequence published
	// resumeAt, when not 0, is the acknowledgement the publisher waits
	// for: the window is full.
	resumeAt uint64
	wake     chan struct{} // acks, failures, connection changes
	// batch is the fast batch being published, when the stream takes
	// them (batch.go).
	batch batchState
	// inbox is the prefix of the reply subjects of fast batch messages;
	// set once by Run.
	inbox string
}

// New checks cfg and opens the backlog, recovering what an earlier run
// left in it.
func New(cfg Config) (*Forwarder, error) {
	if len(cfg.Devices) == 0 && len(cfg.Publishers) == 0 {
		return nil, errors.New("fleet: nothing to forward: no device class and no publisher type")
	}
	for _, c := range cfg.Devices {
		if c != ClassUSB && c != ClassBlockError && c != ClassBlockLifecycle {
			return nil, fmt.Errorf("fleet: %q is not a device class", c)
		}
	}
	for _, t := range cfg.Publishers {
		if !t.IsPublisher() {
			return nil, fmt.Errorf("fleet: type %#x is not a publisher type", uint32(t))
		}
	}
	if cfg.NATS.URL == "" {
		return nil, errors.New("fleet: no NATS URL configured: nothing is sent unless one is")
	}
	if len(cfg.Devices)+len(cfg.Publishers) > record.MaxFilters {
		return nil, fmt.Errorf("fleet: at most %d classes and types", record.MaxFilters)
	}
	cfg.QueueSize = cmpOr(cfg.QueueSize, DefaultQueueSize)
	cfg.Dir = cmpOr(cfg.Dir, DefaultDir)
	cfg.Backlog = cmpOr(cfg.Backlog, DefaultBacklog)
	cfg.Prefix = cmpOr(cfg.Prefix, DefaultPrefix)
	cfg.Stream = cmpOr(cfg.Stream, DefaultStream)
	cfg.Window = cmpOr(cfg.Window, DefaultWindow)
	cfg.AckTimeout = cmpOr(cfg.AckTimeout, DefaultAckTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("fleet: host name: %w", err)
		}
		cfg.Host = h
	}
	if cfg.BootID == "" {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err != nil {
			return nil, fmt.Errorf("fleet: boot id: %w", err)
		}
		cfg.BootID = strings.TrimSpace(string(b))
	}
	if strings.Contains(cfg.BootID, "/") || len(cfg.BootID) > 255 {
		return nil, fmt.Errorf("fleet: boot id %q", cfg.BootID)
	}
	w := uint64(1)
	for w < uint64(cfg.Window) {
		w <<= 1
	}
	sp, err := openSpool(cfg.Dir, cfg.Backlog, cfg.BootID)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{cfg: cfg, log: cfg.Logger, host: cfg.Host, token: HostToken(cfg.Host), sp: sp, window: w,
		done: make([]bool, w), slot: make([]*nats.Msg, w), wake: make(chan struct{}, 1)}
	f.acked = sp.stats().acked
	f.ackedCopy.Store(f.acked)
	return f, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Stats returns the forwarder's counters.
func (f *Forwarder) Stats() Stats {
	s := f.sp.stats()
	acked := f.ackedCopy.Load()
	return Stats{Watching: f.watching.Load(), Read: f.read.Load(), QueueLost: f.queueLost.Load(), Spooled: s.next - 1, Acked: acked, Dropped: s.dropped,
		Published: f.published.Load(), Resends: f.resends.Load(), Backlog: s.size}
}

// Run forwards until ctx ends, then waits briefly for outstanding
// acknowledgements, saves the backlog's state and returns nil. It returns
// an error at once if watchqd refuses the forwarder's first watches (the
// policy) or the backlog cannot be written. It reconnects to watchqd and
// to NATS as often as needed. Run may be called once.
func (f *Forwarder) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := f.sp.close(); err == nil {
			err = cerr
		}
	}()
	nc, err := f.cfg.NATS.Connect(
		nats.ReconnectBufSize(-1), // publishing while disconnected fails at once: the backlog holds it
		nats.ConnectHandler(func(*nats.Conn) { f.poke() }),
		nats.ReconnectHandler(func(*nats.Conn) { f.poke() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				f.log.Warn("fleet: NATS disconnected", "err", err)
			}
			f.poke()
		}),
	)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(int(4*f.window)),
		jetstream.WithPublishAsyncTimeout(f.cfg.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(f.onAck),
		jetstream.WithPublishAsyncErrHandler(f.onErr),
	)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	f.inbox = nc.NewInbox()
	f.batch.on = true
	sub, err := nc.Subscribe(f.inbox+".>", f.onBatchReply)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	defer sub.Unsubscribe()

	// The reader and the publisher share one context: a fatal error in
	// either stops both.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 2)
	ready := make(chan error, 1)
	go func() { errc <- f.readLoop(ctx, ready) }()
	if err := <-ready; err != nil {
		stop()
		<-errc
		return err
	}
	go func() { errc <- f.publishLoop(ctx, nc, js) }()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
			stop()
		}
	}
	return first
}

// poke wakes the publisher.
func (f *Forwarder) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// readLoop takes records from watchqd and spools them, reconnecting when
// the daemon goes away. It reports the outcome of the first watch on
// ready: an error there is fatal.
func (f *Forwarder) readLoop(ctx context.Context, ready chan<- error) error {
	backoff := newBackoff()
	for attempt := 0; ; attempt++ {
		err := f.watch(ctx, attempt > 0, ready)
		ready = nil
		var fe fatalError
		if errors.As(err, &fe) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fe.error
		}
		f.log.Warn("fleet: watchqd", "err", err)
		if !backoff.wait(ctx) {
			return nil
		}
	}
}

type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// watch connects to watchqd, watches what is configured and spools
// records until the connection fails or ctx ends.
func (f *Forwarder) watch(ctx context.Context, again bool, ready chan<- error) error {
	setup := func(err error) error {
		if ready != nil {
			ready <- err
			if err != nil {
				return fatalError{err}
			}
		}
		return err
	}
	c, err := client.Dial(ctx, f.cfg.Socket)
	if err != nil {
		if ready != nil && (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOENT)) {
			return setup(err)
		}
		if ready != nil {
			ready <- nil // watchqd may come later; keep trying
			ready = nil
		}
		return err
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, f.cfg.QueueSize)
	if err != nil {
		return setup(err)
	}
	defer q.Close()
	var entries []record.FilterEntry
	for _, d := range f.cfg.Devices {
		switch d {
		case ClassUSB:
			entries = append(entries, record.FilterEntry{Type: record.TypeUSB, Subtypes: record.AllSubtypes})
		case ClassBlockError:
			entries = append(entries, record.FilterEntry{Type: record.TypeBlock, Subtypes: record.SubtypeSet(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)})
		case ClassBlockLifecycle:
			s := record.AllSubtypes
			s[0] &^= 0x7fe // not the error subtypes 1..10
			entries = append(entries, record.FilterEntry{Type: record.TypeBlock, Subtypes: s})
		}
	}
	for _, t := range f.cfg.Publishers {
		entries = append(entries, record.FilterEntry{Type: t, Subtypes: record.AllSubtypes})
	}
	flt, err := record.NewFilter(entries...)
	if err == nil {
		err = q.SetFilter(ctx, flt)
	}
	if err != nil {
		return setup(err)
	}
	if len(f.cfg.Devices) > 0 {
		src, err := q.WatchDevices(ctx, 0)
		if err != nil {
			return setup(fmt.Errorf("watch devices: %w", err))
		}
		f.log.Info("fleet: watching devices", "granted", src)
	}
	for _, t := range f.cfg.Publishers {
		if err := q.WatchPublisher(ctx, t, 0); err != nil {
			return setup(fmt.Errorf("watch publisher type %#x: %w", uint32(t), err))
		}
	}
	if err := setup(nil); err != nil {
		return err
	}
	if again {
		// Whatever was posted while the forwarder was not watching is
		// lost, and nobody counted it: say so in the stream.
		if err := f.sp.appendLoss(CauseWatchqd, 0, time.Now()); err != nil {
			return fatalError{err}
		}
		if err := f.sp.flush(); err != nil {
			return fatalError{err}
		}
	}
	f.watching.Store(true)
	defer f.watching.Store(false)
	f.log.Info("fleet: forwarding", "host", f.host, "devices", f.cfg.Devices, "publishers", len(f.cfg.Publishers), "queue", q.Capacity())

	var lossCounted uint64 // records lost in this queue that loss records accounted for
	buf := make([]byte, 8192)
	es := make([]entry, 0, len(buf)/record.HeaderSize)
	for {
		n, err := q.Read(ctx, buf)
		if err != nil {
			if errors.Is(err, watchq.ErrClosed) || errors.Is(err, client.ErrDaemonGone) {
				return errors.New("watchqd closed the queue")
			}
			return err
		}
		now := time.Now().UnixNano()
		es = es[:0]
		var records uint64
		for rec, err := range record.Records(buf[:n]) {
			if err != nil {
				return err
			}
			switch {
			case rec.IsLoss():
				l, _ := rec.Loss()
				lost := uint64(max(l.Count, 1))
				if l.Count == 0xffff {
					// The record's count saturated; the queue's
					// counter is exact.
					if st, err := q.Stats(ctx); err == nil && st.Lost > lossCounted {
						lost = max(st.Lost-lossCounted, lost)
					}
				}
				lossCounted += lost
				f.queueLost.Add(lost)
				es = append(es, entry{kind: kindLoss, cause: CauseQueue, time: now, lost: lost})
			case rec.IsRemoval():
				return errors.New("watchqd removed the forwarder's watch")
			default:
				records++
				es = append(es, entry{kind: kindRecord, time: now, rec: rec})
			}
		}
		if err := f.sp.appendAll(es); err != nil {
			return fatalError{err}
		}
		f.read.Add(records)
	}
}

// onAck is nats.go's callback for a stored message.
func (f *Forwarder) onAck(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
	seq, err := strconv.ParseUint(m.Header.Get(HeaderSeq), 10, 64)
	if err != nil {
		return
	}
	f.pmu.Lock()
	if seq > f.acked && seq-f.acked <= f.window {
		f.done[seq%f.window] = true
		for f.done[(f.acked+1)%f.window] {
			f.acked++
			f.done[f.acked%f.window] = false
			f.slot[f.acked%f.window] = nil
		}
	}
	f.ackedCopy.Store(f.acked)
	// Wake the publisher only when it waits for room in the window and
	// half the window is free: not once per acknowledgement.
	wake := f.resumeAt != 0 && f.acked >= f.resumeAt
	if wake {
		f.resumeAt = 0
	}
	f.pmu.Unlock()
	if wake {
		f.poke()
	}
}

// onErr is nats.go's callback for a message the stream did not confirm:
// refused, timed out, or lost with the connection.
func (f *Forwarder) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	seq, perr := strconv.ParseUint(m.Header.Get(HeaderSeq), 10, 64)
	if perr != nil {
		return
	}
	f.pmu.Lock()
	// Only a failure of the message last published for seq counts: the
	// round it belonged to has not been restarted yet.
	if seq > f.acked && seq-f.acked <= f.window && f.slot[seq%f.window] == m && !f.done[seq%f.window] && f.failed == nil {
		f.failed = fmt.Errorf("record %d: %w", seq, err)
	}
	f.pmu.Unlock()
	f.poke()
}

// publishLoop publishes the backlog in order. Each round starts at the
// first unacknowledged sequence and publishes ahead as far as the window
// allows; a failure of any message of the round ends it, and the next
// round starts again at the first unacknowledged sequence (JetStream's
// duplicate window drops what had been stored). When ctx ends it waits
// briefly for the last acknowledgements.
func (f *Forwarder) publishLoop(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error {
	cur := newCursor(f.sp)
	defer cur.close()
	backoff := newBackoff()
	saveTick := time.NewTicker(250 * time.Millisecond)
	defer saveTick.Stop()
	streamOK := !f.cfg.CreateStream
	var e entry
	quick := false // the last round ended on errReprobe: no failure
	for round := 0; ; round++ {
		if round > 0 && !quick {
			f.resends.Add(1)
			if !backoff.wait(ctx) {
				return f.finish()
			}
		}
		for !nc.IsConnected() {
			select {
			case <-ctx.Done():
				return f.finish()
			case <-f.wake:
			case <-saveTick.C:
			}
		}
		if !streamOK {
			if err := f.ensureStream(ctx, js); err != nil {
				f.log.Warn("fleet: stream", "stream", f.cfg.Stream, "err", err)
				continue
			}
			streamOK = true
		}
		f.pmu.Lock()
		f.failed = nil
		next := f.acked + 1
		// Failures still to come for the last round's messages must not
		// end this one.
		clear(f.slot)
		f.batch = batchState{on: f.batch.on, probe: true}
		batching := f.batch.on
		f.pmu.Unlock()
		if err := cur.seek(next); err != nil {
			return err
		}
		var err error
		if batching {
			err = f.batchRound(ctx, nc, cur, &e, next, saveTick, backoff)
		} else {
			err = f.round(ctx, nc, js, cur, &e, next, saveTick, backoff)
		}
		quick = errors.Is(err, errReprobe)
		if err != nil && !quick {
			var fe fatalError
			if errors.As(err, &fe) {
				return fe.error
			}
			if ctx.Err() != nil {
				return f.finish()
			}
			f.log.Warn("fleet: publishing again from the first unacknowledged record", "err", err)
		}
	}
}

// round publishes from sequence next on until a message fails or ctx
// ends.
func (f *Forwarder) round(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cur *cursor, e *entry, next uint64, saveTick *time.Ticker, backoff *backoff) error {
	caughtUp := false
	for {
		// Publish as far as the window and the backlog allow.
		f.pmu.Lock()
		acked, failed := f.acked, f.failed
		f.pmu.Unlock()
		if failed != nil {
			return failed
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for !caughtUp && next-acked <= f.window {
			ok, err := cur.next(e)
			if err != nil {
				return fatalError{err}
			}
			if !ok {
				caughtUp = true
				break
			}
			if e.seq != next {
				return fatalError{fmt.Errorf("fleet: backlog: record %d where %d belongs", e.seq, next)}
			}
			next++
			m := f.message(e, nil, "", 0, 0)
			f.pmu.Lock()
			f.slot[e.seq%f.window] = m
			f.high = max(f.high, e.seq)
			f.pmu.Unlock()
			if _, err := js.PublishMsgAsync(m); err != nil {
				return fmt.Errorf("record %d: %w", e.seq, err)
			}
			f.published.Add(1)
			backoff.reset()
		}
		if !caughtUp {
			// The window is full: wait until half of it is free.
			if f.halfFree(next) {
				continue
			}
		}
		if err := f.sp.ack(acked); err != nil {
			return fatalError{err}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.wake:
		case <-f.sp.notify:
			caughtUp = false
		case <-saveTick.C:
			if err := f.sp.saveState(false); err != nil {
				return fatalError{err}
			}
			if !nc.IsConnected() {
				return errors.New("NATS not connected")
			}
			caughtUp = false
		}
	}
}

// message builds the NATS message for a spooled entry: the header values
// (and, for a fast batch, the reply subject of its message n with
// operation op) share one string. With reuse (fast batches: nats.go
// copies a plain publish into its buffer at once) the message, its header
// map and value slice are reuse's and its Data is the entry's record;
// otherwise (PublishMsgAsync keeps the message until it is acknowledged)
// they are new; either way the one string is.
func (f *Forwarder) message(e *entry, reuse *reusedMsg, batch string, n uint64, op int) *nats.Msg {
	class := ClassOf(e.rec)
	if e.kind == kindLoss {
		class = ClassLoss
	}
	var b []byte
	if reuse != nil {
		b = reuse.buf[:0]
	} else {
		b = make([]byte, 0, 2*len(f.host)+2*len(e.boot)+len(f.cfg.Prefix)+len(f.token)+96)
	}
	b = append(b, f.host...)
	b = append(b, '/')
	b = append(b, e.boot...)
	b = append(b, '/')
	seqAt := len(b)
	b = strconv.AppendUint(b, e.seq, 10)
	seqEnd := len(b)
	b = time.Unix(0, e.time).UTC().AppendFormat(b, timeLayout)
	timeEnd := len(b)
	lostEnd := timeEnd
	if e.kind == kindLoss {
		b = strconv.AppendUint(b, e.lost, 10)
		lostEnd = len(b)
	}
	subjAt := len(b)
	b = append(b, f.cfg.Prefix...)
	b = append(b, '.')
	b = append(b, f.token...)
	b = append(b, '.')
	b = append(b, class...)
	replyAt := len(b)
	if batch != "" {
		b = f.appendReply(b, batch, n, op)
	}
	str := string(b)
	if reuse != nil {
		reuse.buf = b
	}

	var m *nats.Msg
	var v []string
	if reuse != nil {
		m, v = &reuse.m, reuse.v[:]
	} else {
		m, v = &nats.Msg{}, make([]string, 7)
	}
	if m.Header == nil {
		m.Header = make(nats.Header, 7)
	}
	h := m.Header
	v[0], v[1], v[2], v[3], v[4] = str[:seqEnd], f.host, e.boot, str[seqAt:seqEnd], str[seqEnd:timeEnd]
	h[HeaderMsgID], h[HeaderHost], h[HeaderBoot], h[HeaderSeq], h[HeaderTime] = v[0:1:1], v[1:2:2], v[2:3:3], v[3:4:4], v[4:5:5]
	if e.kind == kindLoss {
		v[5], v[6] = str[timeEnd:lostEnd], e.cause.String()
		h[HeaderLost], h[HeaderCause] = v[5:6:6], v[6:7:7]
	} else {
		delete(h, HeaderLost)
		delete(h, HeaderCause)
	}
	m.Subject, m.Reply = str[subjAt:replyAt], str[replyAt:]
	if reuse != nil {
		m.Data = e.rec
	} else {
		m.Data = append([]byte(nil), e.rec...)
	}
	return m
}

// reusedMsg is a message and its header values, used again for each
// message of a fast batch.
type reusedMsg struct {
	m   nats.Msg
	v   [7]string
	buf []byte // where the header values are put together
}

// ensureStream creates the stream unless it exists.
func (f *Forwarder) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, f.cfg.Stream); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	_, err := js.CreateStream(ctx, StreamConfig(f.cfg.Stream, f.cfg.Prefix, 0, 0))
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil
	}
	return err
}

// finish waits at most two seconds for every published message to be
// acknowledged, and records what was.
func (f *Forwarder) finish() error {
	deadline := time.NewTimer(2 * time.Second)
	defer deadline.Stop()
	for {
		f.pmu.Lock()
		acked, high := f.acked, f.high
		f.pmu.Unlock()
		if err := f.sp.ack(acked); err != nil || acked >= high {
			return err
		}
		select {
		case <-f.wake:
		case <-time.After(5 * time.Millisecond):
		case <-deadline.C:
			return nil
		}
	}
}

// backoff is a bounded exponential pause: 50 ms doubling to 2 s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) reset() { b.d = 0 }

// wait pauses, and reports false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	b.d = min(max(2*b.d, 50*time.Millisecond), 2*time.Second)
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// halfFree reports whether half of the window is free again, behind next
// (the sequence to publish next); if not, it asks onAck to wake the
// publisher once it is (resumeAt).
func (f *Forwarder) halfFree(next uint64) bool {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	if next-f.acked <= f.window/2 {
		return true
	}
	f.resumeAt = next - f.window/2
	return false
}
