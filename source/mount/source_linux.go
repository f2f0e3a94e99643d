//go:build linux

package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// Source watches one mount namespace's mounts and superblocks for engine
// queues. Its methods are safe for concurrent use.
//
// All kernel work happens on one OS thread that has joined the namespace
// (the worker): fanotify and mountinfo reads, statmount(2), and the path
// lookups of the Watch methods, so paths mean what they mean there.
type Source struct {
	eng   *watchq.Engine
	caps  Capabilities
	stats counters
	paths *pathIndex

	mu     sync.Mutex // guards closed, unhook and the sending side of reqs
	closed bool
	// unhook stops Open's ctx from closing the source; set by Open.
	unhook func() bool
	reqs   chan func(*worker)
	wake   int           // eventfd the worker polls; written after each request
	done   chan struct{} // closed when the worker has exited
}

// Open starts a source on the calling thread's mount namespace, or on
// Config.Namespace. Backend Fanotify on a kernel without fanotify mount
// events fails with an error matching ErrNotSupported.
//
// ctx governs the source's life, as for keys.Open and device.Open:
// cancelling it closes the source as Close does (every watch ends with a
// removal record), and a ctx already done fails Open with ctx.Err().
func Open(ctx context.Context, cfg Config) (*Source, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Engine == nil {
		return nil, errors.New("mount: Config.Engine is nil")
	}
	b := cfg.Backend
	if b == Auto {
		if v := os.Getenv(BackendEnv); v != "" {
			eb, err := ParseBackend(v)
			if err != nil {
				return nil, fmt.Errorf("mount: $%s: %w", BackendEnv, err)
			}
			b = eb
		}
	}
	nsPath := cfg.Namespace
	if nsPath == "" {
		nsPath = "/proc/thread-self/ns/mnt"
	}
	nsfd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount: namespace %s: %w", nsPath, err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(nsfd)
		return nil, fmt.Errorf("mount: eventfd: %w", err)
	}
	gen := cfg.Generator
	if gen == nil {
		gen = watchq.SystemCred
	}
	s := &Source{eng: cfg.Engine, paths: newPathIndex(), reqs: make(chan func(*worker), 64), wake: wake, done: make(chan struct{})}
	ready := make(chan error, 1)
	goLocked(func() { s.run(nsfd, b, gen, cfg.NoFSErrors, ready) })
	select {
	case err = <-ready:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		<-s.done
		unix.Close(wake)
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	s.mu.Lock()
	s.unhook = stop
	s.mu.Unlock()
	return s, nil
}

// Backend returns the topology backend in use (never Auto).
func (s *Source) Backend() Backend { return s.caps.Backend }

// Capabilities says which parts run here, and why the others do not.
func (s *Source) Capabilities() Capabilities { return s.caps }

// Stats returns the source's counters.
func (s *Source) Stats() Stats {
	return Stats{
		Events: s.stats.events.Load(), Posted: s.stats.posted.Load(), Unresolved: s.stats.unresolved.Load(),
		Overflows: s.stats.overflows.Load(), Scans: s.stats.scans.Load(),
	}
}

// MountPoint returns the mount point of the mount with this id, as the
// source last knew it (mounts detached lately are remembered), for
// display: printer.MountResolver.
func (s *Source) MountPoint(id uint64) (string, bool) { return s.paths.lookup(id) }

// do runs f on the worker and waits for it.
func (s *Source) do(ctx context.Context, f func(*worker) error) error {
	errc := make(chan error, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	select {
	case s.reqs <- func(w *worker) { errc <- f(w) }:
	case <-ctx.Done():
		s.mu.Unlock()
		return ctx.Err()
	}
	s.kick()
	s.mu.Unlock()
	select {
	case err := <-errc:
		return err
	case <-s.done:
		select {
		case err := <-errc:
			return err
		default:
			return ErrClosed
		}
	}
}

func (s *Source) kick() {
	var one [8]byte
	one[0] = 1
	unix.Write(s.wake, one[:])
}

// absPath makes path absolute against the process's working directory.
func absPath(path string) (string, error) {
	if path == "" {
		return "", &os.PathError{Op: "watch", Path: path, Err: unix.ENOENT}
	}
	return filepath.Abs(path)
}

// WatchMount makes q receive records about the mounts at and below
// directory path, delivered with tag: watch_mount(AT_FDCWD, path, 0, q,
// tag). The watch is on the directory in the mount it resolves to
// (symbolic links followed); when that mount is unmounted the watch ends
// with a removal record carrying the mount id. watcher is the credential
// the engine's policy rules on (Object kind watchq.KindMount, the
// directory's owner and search bits); nil means watchq.CurrentCred(). The
// directory must be searchable by this process (EACCES), a second watch
// by q on it is watchq.ErrWatchExists (EBUSY).
func (s *Source) WatchMount(q *watchq.Queue, path string, tag record.Tag, watcher *watchq.Cred) error {
	if watcher == nil {
		watcher = watchq.CurrentCred()
	}
	p, err := absPath(path)
	if err != nil {
		return err
	}
	return s.do(context.Background(), func(w *worker) error { return w.watchMount(q, p, tag, watcher) })
}

// UnwatchMount removes q's watch on directory path, posting its removal
// record; watchq.ErrNoWatch (EBADSLT) if there is none.
func (s *Source) UnwatchMount(q *watchq.Queue, path string) error {
	p, err := absPath(path)
	if err != nil {
		return err
	}
	return s.do(context.Background(), func(w *worker) error { return w.unwatchMount(q, p) })
}

// WatchSuperblock makes q receive records about the filesystem path is on:
// watch_sb(AT_FDCWD, path, 0, q, tag). When no mount of it is left in the
// namespace the watch ends with a removal record carrying its id. An error
// matching ErrNoFSErrors means the watch is in place but reports read-only
// transitions only.
func (s *Source) WatchSuperblock(q *watchq.Queue, path string, tag record.Tag, watcher *watchq.Cred) error {
	if watcher == nil {
		watcher = watchq.CurrentCred()
	}
	p, err := absPath(path)
	if err != nil {
		return err
	}
	return s.do(context.Background(), func(w *worker) error { return w.watchSB(q, p, tag, watcher) })
}

// UnwatchSuperblock removes q's watch on the filesystem path is on.
func (s *Source) UnwatchSuperblock(q *watchq.Queue, path string) error {
	p, err := absPath(path)
	if err != nil {
		return err
	}
	return s.do(context.Background(), func(w *worker) error { return w.unwatchSB(q, p) })
}

// Watches returns how many watches the source holds, on mounts and
// superblocks together (watches of closed queues are gone): a source with
// none posts to no one, so its owner may close it.
func (s *Source) Watches() (int, error) {
	n := 0
	err := s.do(context.Background(), func(w *worker) error {
		for _, wl := range w.t.watches {
			n += wl.Len()
		}
		for _, sw := range w.t.sbs {
			n += sw.wl.Len()
		}
		return nil
	})
	return n, err
}

// Sync returns once every change made before the call has been posted:
// the fanotify queues are drained (the kernel queues mount and error
// events before the system call that caused them returns) and mountinfo is
// read again.
func (s *Source) Sync(ctx context.Context) error {
	return s.do(ctx, func(w *worker) error { w.pass(true); return nil })
}

// Close stops the source; every remaining watch ends with a removal
// record. It is idempotent.
func (s *Source) Close() error {
	s.mu.Lock()
	unhook := s.unhook
	if !s.closed {
		s.closed = true
		close(s.reqs)
		s.kick()
	}
	s.mu.Unlock()
	if unhook != nil {
		unhook()
	}
	<-s.done
	return nil
}

// run is the worker goroutine (goLocked: its thread dies with it, as it
// may have left the process's namespace).
func (s *Source) run(nsfd int, b Backend, gen *watchq.Cred, noFSErrors bool, ready chan<- error) {
	defer close(s.done)
	w, err := s.setup(nsfd, b, gen, noFSErrors)
	unix.Close(nsfd)
	ready <- err
	if err != nil {
		return
	}
	defer w.close()
	w.loop()
}

// setup joins the namespace and starts the backends.
func (s *Source) setup(nsfd int, b Backend, gen *watchq.Cred, noFSErrors bool) (*worker, error) {
	if err := joinNamespace(nsfd); err != nil {
		return nil, err
	}
	w := &worker{s: s, fan: -1, mi: -1, errfd: -1, fsids: make(map[[2]int32]uint64), evbuf: make([]byte, 64<<10)}
	w.t = newTopology(s.eng, gen, &s.stats, s.paths)
	w.t.onSBGone = w.unmarkSB
	fail := func(err error) (*worker, error) { w.close(); return nil, err }

	// The mountinfo descriptor is never given to the runtime poller: its
	// poll method consumes the change it reports (mounts_poll updates the
	// reader's event count), so only the worker's own poll(2) may call it.
	mi, err := unix.Open("/proc/thread-self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("mount: open mountinfo: %w", err))
	}
	w.mi = mi
	if _, err := listmount(); err != nil {
		s.caps.UniqueIDs = err
	} else {
		w.unique = true
	}

	if b == Auto || b == Fanotify {
		fan, err := openMountEvents()
		switch {
		case err == nil:
			w.fan = fan
			b = Fanotify
		case b == Fanotify:
			return fail(err)
		default:
			s.caps.Fanotify = err
			b = Mountinfo
		}
	} else {
		s.caps.Fanotify = errors.New("not selected")
	}
	s.caps.Backend = b
	if b == Fanotify && !w.unique {
		return fail(fmt.Errorf("mount: fanotify backend without statmount(2): %v", s.caps.UniqueIDs))
	}

	if err := w.snapshot(); err != nil {
		return fail(err)
	}
	if noFSErrors {
		s.caps.FSErrors = errors.New("turned off (Config.NoFSErrors)")
	} else if fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_FID|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY); err != nil {
		s.caps.FSErrors = fmt.Errorf("fanotify_init(FAN_REPORT_FID): %w", err)
	} else {
		w.errfd = fd
	}
	return w, nil
}

// joinNamespace moves the calling (locked) thread into the mount namespace
// nsfd names, unless it is there already. setns(2) into a mount namespace
// needs a thread of its own filesystem context (CLONE_FS unshared).
func joinNamespace(nsfd int) error {
	var want, have unix.Stat_t
	if err := unix.Fstat(nsfd, &want); err != nil {
		return fmt.Errorf("mount: namespace: %w", err)
	}
	if err := unix.Stat("/proc/thread-self/ns/mnt", &have); err == nil && have.Ino == want.Ino && have.Dev == want.Dev {
		return nil
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("mount: unshare(CLONE_FS): %w", err)
	}
	if err := unix.Setns(nsfd, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("mount: setns(CLONE_NEWNS): %w", err)
	}
	return nil
}

// openMountEvents makes the fanotify group for mount events and marks the
// worker's namespace.
func openMountEvents() (int, error) {
	fd, err := unix.FanotifyInit(unix.FAN_REPORT_MNT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, 0)
	if err == unix.EINVAL {
		return -1, fmt.Errorf("%w: fanotify_init(FAN_REPORT_MNT): %w (mount events need Linux 6.15)", ErrNotSupported, err)
	}
	if err != nil {
		return -1, fmt.Errorf("%w: fanotify_init(FAN_REPORT_MNT): %w", ErrNotSupported, err)
	}
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MNTNS, unix.FAN_MNT_ATTACH|unix.FAN_MNT_DETACH, unix.AT_FDCWD, "/proc/thread-self/ns/mnt"); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: fanotify_mark(FAN_MARK_MNTNS): %w", ErrNotSupported, err)
	}
	return fd, nil
}

// worker is the state of the worker goroutine; only it touches it.
type worker struct {
	s      *Source
	t      *topology
	fan    int  // fanotify mount events, or -1 (mountinfo backend)
	mi     int  // /proc/thread-self/mountinfo
	errfd  int  // fanotify FAN_FS_ERROR group, or -1
	unique bool // listmount/statmount work: ids are the 64-bit unique ones

	sm       statmountBuf
	evbuf    []byte
	miBuf    []byte
	miLines  []mountInfo
	fsids    map[[2]int32]uint64 // FS error marks: statfs fsid → superblock
	deferred bool                // a mountinfo change is waiting for its scan
	lastScan time.Time
	scanCost time.Duration // how long the last mountinfo reread took
}

// attrScanBound bounds how long the fanotify backend defers rereading
// mountinfo while topology events stream in (each of which also changes
// mountinfo): a storm costs one reread per bound, not one per event. With
// many mounts a reread costs more, and the bound grows to keep rereads
// under an eighth of the worker's time.
const attrScanBound = 20 * time.Millisecond

// scanBound is the deferral bound now.
func (w *worker) scanBound() time.Duration { return max(attrScanBound, 8*w.scanCost) }

func (w *worker) close() {
	for _, fd := range []int{w.fan, w.mi, w.errfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	w.fan, w.mi, w.errfd = -1, -1, -1
}

// loop waits for kernel events and requests until Close.
func (w *worker) loop() {
	fds := []unix.PollFd{{Fd: int32(w.s.wake), Events: unix.POLLIN}, {Fd: int32(w.mi), Events: unix.POLLPRI}}
	fanIdx, errIdx := -1, -1
	if w.fan >= 0 {
		fanIdx = len(fds)
		fds = append(fds, unix.PollFd{Fd: int32(w.fan), Events: unix.POLLIN})
	}
	if w.errfd >= 0 {
		errIdx = len(fds)
		fds = append(fds, unix.PollFd{Fd: int32(w.errfd), Events: unix.POLLIN})
	}
	for {
		timeout := -1
		if w.deferred {
			timeout = max(0, int(time.Until(w.lastScan.Add(w.scanBound()))/time.Millisecond)+1)
		}
		for i := range fds {
			fds[i].Revents = 0
		}
		_, err := unix.Poll(fds, timeout)
		if err != nil && err != unix.EINTR {
			time.Sleep(10 * time.Millisecond) // never spin on an unexpected error
			continue
		}
		if fds[0].Revents != 0 {
			var b [8]byte
			unix.Read(w.s.wake, b[:])
			if !w.serve() {
				w.shutdown()
				return
			}
		}
		// Errors first: an error the kernel queued before an unmount
		// must reach the superblock's watch before the unmount's
		// removal record ends it (fsnotify_sb_error queues the event
		// from the failing call itself, so by the time a detach is
		// readable, every earlier error is).
		if errIdx >= 0 && fds[errIdx].Revents != 0 {
			w.readErrors()
		}
		topo := false
		if fanIdx >= 0 && fds[fanIdx].Revents != 0 {
			topo = w.readMountEvents() > 0
		}
		changed := fds[1].Revents&(unix.POLLPRI|unix.POLLERR) != 0
		if changed || w.deferred {
			if w.fan < 0 {
				w.scanFallback()
			} else if changed && topo && time.Since(w.lastScan) < w.scanBound() {
				w.deferred = true
			} else if changed || time.Since(w.lastScan) >= w.scanBound() {
				w.scanAttrs()
			}
		}
	}
}

// serve runs the queued requests; false when the source is closing.
func (w *worker) serve() bool {
	for {
		select {
		case f, ok := <-w.s.reqs:
			if !ok {
				return false
			}
			f(w)
		default:
			return true
		}
	}
}

// shutdown ends every watch with its removal record.
func (w *worker) shutdown() {
	for k, wl := range w.t.watches {
		delete(w.t.watches, k)
		wl.Destroy()
	}
	for dev, sw := range w.t.sbs {
		delete(w.t.sbs, dev)
		sw.wl.Destroy()
	}
}

// pass reads everything the kernel has queued and rereads mountinfo.
func (w *worker) pass(force bool) {
	if w.errfd >= 0 {
		w.readErrors() // first, as in loop
	}
	if w.fan >= 0 {
		w.readMountEvents()
	}
	if w.fan < 0 {
		w.scanFallback()
	} else if force || w.deferred {
		w.scanAttrs()
	}
}

// entryFrom converts statmount(2)'s answer.
func entryFrom(si statmountInfo) entry {
	return entry{
		id: si.ID, parent: si.ParentID, oldID: si.OldID, mountPoint: si.MountPoint,
		dev: record.KernelDev(si.DevMajor, si.DevMinor), attr: si.Attr, sbRO: si.SBFlags&sbRdonly != 0,
	}
}

// entryFromLine converts a mountinfo line; parent is resolved by the caller.
func entryFromLine(l *mountInfo) entry {
	return entry{
		id: uint64(l.ID), oldID: l.ID, mountPoint: l.MountPoint,
		dev: record.KernelDev(l.Major, l.Minor), attr: l.Attr, sbRO: l.SBReadonly,
	}
}

// snapshot loads the namespace's mounts as they are at start.
func (w *worker) snapshot() error {
	if w.fan >= 0 || w.unique {
		ids, err := listmount()
		if err != nil {
			return fmt.Errorf("mount: listmount: %w", err)
		}
		es := make([]entry, 0, len(ids))
		for _, id := range ids {
			si, err := w.sm.statmount(id)
			if err != nil {
				continue // gone already
			}
			es = append(es, entryFrom(si))
		}
		w.t.load(es)
		if w.fan < 0 {
			// The fallback's passes compare against mountinfo: read it
			// once so the first pass has nothing to report.
			w.readMountinfo()
		}
		return nil
	}
	if err := w.readMountinfo(); err != nil {
		return err
	}
	es := make([]entry, 0, len(w.miLines))
	for i := range w.miLines {
		e := entryFromLine(&w.miLines[i])
		e.parent = uint64(w.miLines[i].Parent)
		es = append(es, e)
	}
	w.t.load(es)
	return nil
}

// readMountinfo rereads the whole file into w.miLines.
func (w *worker) readMountinfo() error {
	b, err := w.readMountinfoRaw()
	if err != nil {
		return err
	}
	lines, err := parseMountinfo(b, w.miLines)
	w.miLines = lines
	return err
}

// readMountinfoRaw rereads the whole file into w.miBuf.
func (w *worker) readMountinfoRaw() ([]byte, error) {
	if w.miBuf == nil {
		w.miBuf = make([]byte, 64<<10)
	}
	n := 0
	for {
		m, err := unix.Pread(w.mi, w.miBuf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("mount: read mountinfo: %w", err)
		}
		if m == 0 {
			break
		}
		n += m
		if n == len(w.miBuf) {
			w.miBuf = append(w.miBuf, make([]byte, len(w.miBuf))...)
		}
	}
	w.s.stats.scans.Add(1)
	return w.miBuf[:n], nil
}
