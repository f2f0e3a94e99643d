//go:build linux

package keys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
)

// Source watches keys for engine queues. Its methods are safe for
// concurrent use.
type Source struct {
	eng      *watchq.Engine
	gen      *watchq.Cred
	backend  Backend
	fallback error // why Auto did not choose Traced (traced_linux.go)
	impl     backend
	interval time.Duration

	mu      sync.Mutex
	entries map[int32]*entry // watched keys by serial. Guarded by mu.
	closed  bool             // Guarded by mu.

	stop    chan struct{}  // closed by Close
	done    chan struct{}  // closed when Close has finished
	stopCtx func() bool    // stops Open's context.AfterFunc
	wg      sync.WaitGroup // the backend goroutine
}

// entry is one watched key: its watch list and backend state.
type entry struct {
	serial int32
	wl     *watchq.WatchList // immutable
	as     *watchq.Cred      // WatchAs's watcher that made the entry, nil for Watch; immutable

	// Poll backend state, guarded by poller.scanMu.
	snap    snapshot // last picture
	next    snapshot // being built by a scan
	scratch []int32  // members buffer for next
	dead    bool     // removed from Source.entries. Guarded by Source.mu.
}

// backend is what the two backends implement.
type backend interface {
	addLocked(e *entry) error // Source.mu must be held
	removeLocked(e *entry)    // Source.mu must be held
	run()
	sync(ctx context.Context) error
	close()
}

// Open starts a key source. It fails with an error matching
// kernel.ErrNotSupported if Backend is Kernel and the kernel lacks the
// facility.
//
// ctx governs the source's life, as for device.Open: cancelling it closes
// the source as Close does (every watch ends with a removal record), and
// a ctx already done fails Open with ctx.Err(). Open itself does not
// block.
func Open(ctx context.Context, cfg Config) (*Source, error) {
	if cfg.Engine == nil {
		return nil, errors.New("keys: Config.Engine is nil")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	s := &Source{
		eng: cfg.Engine, gen: cfg.Generator, interval: cfg.Interval,
		entries: make(map[int32]*entry), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if s.gen == nil {
		s.gen = watchq.SystemCred
	}
	if s.interval <= 0 {
		s.interval = DefaultInterval
	}
	b, err := chooseBackend(cfg.Backend)
	if err != nil {
		return nil, err
	}
	if b == Auto { // no kernel facility: traced where it loads, else poll
		if b, err = s.openTraced(); err != nil {
			return nil, err
		}
	}
	s.backend = b
	switch b {
	case Traced:
		if s.impl == nil {
			tb, err := newTracedBackend(s)
			if err != nil {
				return nil, fmt.Errorf("keys: traced backend: %w", err)
			}
			s.impl = tb
		}
	case Kernel:
		kb, err := newKernelBackend(s, cfg.PipeNotes)
		if err != nil {
			return nil, err
		}
		s.impl = kb
	case Poll:
		s.impl = newPoller(s)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.impl.run()
	}()
	s.stopCtx = context.AfterFunc(ctx, func() { s.close(false) })
	return s, nil
}

// probeKernel is kernel.Probe; tests replace it.
var probeKernel = kernel.Probe

// chooseBackend resolves Auto.
func chooseBackend(b Backend) (Backend, error) {
	if b == Auto {
		switch v := os.Getenv(BackendEnv); v {
		case "kernel":
			b = Kernel
		case "poll":
			b = Poll
		case "traced":
			b = Traced
		case "", "auto":
		default:
			return 0, fmt.Errorf("keys: $%s=%q, want kernel, traced, poll or auto", BackendEnv, v)
		}
	}
	switch b {
	case Auto:
		// Only a conclusive answer picks: the facility is there, or the
		// kernel says it is not. A probe that failed (EMFILE, ENOMEM)
		// says nothing about the kernel, and a Source lives long: fail
		// rather than poll for its whole life on a passing error.
		switch err := probeKernel(); {
		case err == nil:
			return Kernel, nil
		case errors.Is(err, kernel.ErrNotSupported):
			return Auto, nil // Open tries Traced, then Poll
		default:
			return 0, fmt.Errorf("keys: choosing a backend: %w", err)
		}
	case Kernel:
		if err := probeKernel(); err != nil {
			return 0, fmt.Errorf("keys: kernel backend: %w", err)
		}
		return Kernel, nil
	case Poll, Traced:
		return b, nil
	}
	return 0, fmt.Errorf("keys: unknown backend %d", b)
}

// Backend returns the backend in use (never Auto).
func (s *Source) Backend() Backend { return s.backend }

// Watch makes q receive records about key id (a serial, or a special id such
// as unix.KEY_SPEC_SESSION_KEYRING, resolved to its serial and created if
// needed, as the kernel does), delivered with tag. watcher is the credential
// the engine's policy rules on; nil means watchq.CurrentCred(). The key must
// be viewable by this process (EACCES otherwise) and instantiated: a key
// under construction is waited for, a negatively instantiated one refused
// with its error (ENOKEY, EKEYREJECTED...), as by the kernel; see
// lookupView. A second watch by q on the same key gives
// watchq.ErrWatchExists (EBUSY).
//
// Corresponds to security/keys/keyctl.c:keyctl_watch_key.
func (s *Source) Watch(q *watchq.Queue, id int32, tag record.Tag, watcher *watchq.Cred) error {
	if watcher == nil {
		watcher = watchq.CurrentCred()
	}
	if s.isClosed() {
		return fmt.Errorf("keys: watch key %d: %w", id, watchq.ErrClosed)
	}
	serial, err := resolve(id)
	if err != nil {
		return err
	}
	d, err := lookupView(serial) // under our credentials, as the kernel's lookup
	if err != nil {
		return err
	}
	return s.watchViewed(q, serial, tag, watcher, d, nil)
}

// watchViewed adds q's watch on serial, whose View check passed with
// description d; as is WatchAs's watcher (nil for Watch), in whose
// context a new entry's first picture is taken.
func (s *Source) watchViewed(q *watchq.Queue, serial int32, tag record.Tag, watcher *watchq.Cred, d Description, as *watchq.Cred) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("keys: watch key %d: %w", serial, watchq.ErrClosed)
	}
	e := s.entries[serial]
	fresh := e == nil
	if fresh {
		e = &entry{serial: serial, as: as, wl: s.eng.NewWatchList(watchq.Object{
			Kind: watchq.KindKey, ID: ObjectID(serial), UID: d.UID, GID: d.GID, Mode: d.Mode(),
		})}
		if err := s.impl.addLocked(e); err != nil {
			return err
		}
		s.entries[serial] = e
	}
	if err := e.wl.Add(q, ObjectID(serial), tag, watcher); err != nil {
		if fresh {
			s.dropLocked(e)
		}
		return fmt.Errorf("keys: watch key %d: %w", serial, err)
	}
	return nil
}

// Unwatch removes q's watch on key id; q gets a removal record. As
// KEYCTL_WATCH_KEY with -1 does, it first looks the key up as Watch does
// (special ids created if need be, View and instantiation checked, see
// lookupView), so a key this process may no longer view cannot be
// unwatched (EACCES) and its watch stays. It fails with watchq.ErrNoWatch
// (EBADSLT) if q does not watch the key.
func (s *Source) Unwatch(q *watchq.Queue, id int32) error {
	if s.isClosed() {
		return fmt.Errorf("keys: unwatch key %d: %w", id, watchq.ErrClosed)
	}
	serial, err := resolve(id)
	if err != nil {
		return err
	}
	if _, err := lookupView(serial); err != nil {
		return err
	}
	return s.unwatchViewed(q, serial)
}

// unwatchViewed removes q's watch on serial, whose View check passed.
func (s *Source) unwatchViewed(q *watchq.Queue, serial int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("keys: unwatch key %d: %w", serial, watchq.ErrClosed)
	}
	e := s.entries[serial]
	if e == nil {
		return fmt.Errorf("keys: unwatch key %d: %w", serial, watchq.ErrNoWatch)
	}
	if err := e.wl.Remove(q, ObjectID(serial)); err != nil {
		return fmt.Errorf("keys: unwatch key %d: %w", serial, err)
	}
	if e.wl.Len() == 0 {
		s.dropLocked(e)
	}
	return nil
}

// isClosed reports whether Close was called.
func (s *Source) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// dropLocked forgets e and releases its backend watch. s.mu must be held.
func (s *Source) dropLocked(e *entry) {
	if e.dead {
		return
	}
	e.dead = true
	delete(s.entries, e.serial)
	s.impl.removeLocked(e)
}

// destroyLocked ends every watch on e with a removal record: the key is
// gone. s.mu must be held.
func (s *Source) destroyLocked(e *entry) {
	e.wl.Destroy()
	e.dead = true
	delete(s.entries, e.serial)
}

// Watched returns the number of keys watched.
func (s *Source) Watched() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Sync returns once every change made before the call has been posted: the
// kernel backend waits until its pipe is drained and relayed (as keyutils'
// watch_sync does), the poll backend runs a poll pass at once. Garbage
// collection is asynchronous: a removal may come later.
func (s *Source) Sync(ctx context.Context) error {
	if s.isClosed() {
		return fmt.Errorf("keys: sync: %w", watchq.ErrClosed)
	}
	return s.impl.sync(ctx)
}

// Close stops the source. Every watch it holds ends with a removal record.
// Later calls wait for the first to finish and return nil; the source's
// other methods then return an error matching watchq.ErrClosed.
func (s *Source) Close() error { return s.close(true) }

// close is Close; stopCtx says whether to stop Open's context.AfterFunc
// (not when that is the caller: it runs in a goroutine of its own, which
// must not read s.stopCtx while Open may still be writing it).
func (s *Source) close(stopCtx bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	for _, e := range s.entries {
		s.destroyLocked(e)
	}
	s.mu.Unlock()
	if stopCtx {
		s.stopCtx()
	}
	close(s.stop)
	s.impl.close()
	s.wg.Wait()
	close(s.done)
	return nil
}

// postLocked builds key record n and posts it to e's watch list. s.mu must
// be held.
func (s *Source) postLocked(e *entry, n record.KeyNotification) {
	var b [record.KeyRecordSize]byte
	rec, _ := n.AppendBinary(b[:0])
	e.wl.Post(rec, s.gen, ObjectID(e.serial))
}
