//go:build linux && amd64

package run

import (
	"context"
	"strconv"
	"strings"

	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// The supervisor's side of the FUSE file system: queue files by node id,
// open files by handle.

type handle struct {
	q    *kqueue
	mode uint8
	kh   uint64 // FUSE poll handle, once polled with SCHEDULE_NOTIFY
}

// newQueue makes a queue and its FUSE file.
func (s *supervisor) newQueue() *kqueue {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	q := newKqueue(s, s.nextID+fuseRootID)
	s.queues[q.id] = q
	s.byEQ[q.eq] = q
	s.rs.Add(q.eq)
	return q
}

func (s *supervisor) lookup(name string) (uint64, bool) {
	id, err := strconv.ParseUint(strings.TrimPrefix(name, "q"), 10, 64)
	if err != nil || !strings.HasPrefix(name, "q") {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[id]
	return id, q != nil
}

func (s *supervisor) open(nodeid uint64, flags uint32) (uint64, unix.Errno) {
	var mode uint8
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		mode = modeRead
	case unix.O_WRONLY:
		mode = modeWrite
	default:
		mode = modeRead | modeWrite
	}
	s.mu.Lock()
	q := s.queues[nodeid]
	if q == nil {
		s.mu.Unlock()
		return 0, unix.ENOENT
	}
	s.nextFH++
	fh := s.nextFH
	s.handles[fh] = &handle{q: q, mode: mode}
	s.mu.Unlock()

	q.mu.Lock()
	if mode&modeRead != 0 {
		q.readers++
	}
	if mode&modeWrite != 0 {
		q.writers++
	}
	q.mu.Unlock()
	return fh, 0
}

func (s *supervisor) handleOf(fh uint64) *handle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handles[fh]
}

func (s *supervisor) read(r *fuseReq, fh uint64, size, flags uint32) {
	h := s.handleOf(fh)
	if h == nil || h.mode&modeRead == 0 {
		s.fuse.reply(r, unix.EBADF, nil)
		return
	}
	q := h.q
	buf := make([]byte, min(size, maxReadBuf))
	q.mu.Lock()
	defer q.mu.Unlock()
	q.drainLocked()
	was := q.count
	n, errno, wait := q.readLocked(buf)
	if wait {
		if flags&unix.O_NONBLOCK != 0 {
			s.fuse.reply(r, unix.EAGAIN, nil)
			return
		}
		q.waiting = append(q.waiting, pendingRead{r: r, size: size})
		s.mu.Lock()
		s.pending[r.unique] = q
		s.mu.Unlock()
		return
	}
	s.fuse.reply(r, errno, buf[:n])
	if was >= q.maxUsage() && q.count < q.maxUsage() {
		// Room again: the write end polls writable (pipe_read's was_full).
		for kh, m := range q.pollers {
			if m&modeWrite != 0 {
				s.fuse.notifyPoll(kh)
			}
		}
	}
}

func (s *supervisor) forgetPending(unique uint64) {
	s.mu.Lock()
	delete(s.pending, unique)
	s.mu.Unlock()
}

// interrupt answers a blocked read whose caller got a signal: EINTR (a
// FUSE server cannot return ERESTARTSYS, so an SA_RESTART handler does not
// restart the read as it would on a pipe).
func (s *supervisor) interrupt(unique uint64) {
	s.mu.Lock()
	q := s.pending[unique]
	delete(s.pending, unique)
	s.mu.Unlock()
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, p := range q.waiting {
		if p.r.unique == unique {
			q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
			s.fuse.reply(p.r, unix.EINTR, nil)
			return
		}
	}
}

func (s *supervisor) poll(fh, kh uint64, flags, _ uint32) (uint32, unix.Errno) {
	h := s.handleOf(fh)
	if h == nil {
		return 0, unix.EBADF
	}
	q := h.q
	q.mu.Lock()
	defer q.mu.Unlock()
	q.drainLocked()
	if flags&pollScheduleNotify != 0 {
		q.pollers[kh] = h.mode
		h.kh = kh
	}
	return q.reventsLocked(h.mode), 0
}

// release is the last close of one open file. The last close of the last
// write end makes blocked reads return end of file and the read ends poll
// POLLHUP; the last close of everything destroys the queue
// (free_pipe_info → watch_queue_clear: its watches go without removal
// records).
func (s *supervisor) release(fh uint64) {
	s.mu.Lock()
	h := s.handles[fh]
	delete(s.handles, fh)
	s.mu.Unlock()
	if h == nil {
		return
	}
	q := h.q
	q.mu.Lock()
	if h.kh != 0 {
		delete(q.pollers, h.kh)
	}
	if h.mode&modeRead != 0 {
		q.readers--
	}
	if h.mode&modeWrite != 0 {
		q.writers--
	}
	gone := q.readers == 0 && q.writers == 0
	if !gone {
		q.drainLocked()
		q.wakeLocked()
	}
	if gone {
		q.closed = true
	}
	q.mu.Unlock()
	if gone {
		s.destroyQueue(q)
	}
	s.changed()
}

// destroyQueue ends a queue whose files are all closed.
func (s *supervisor) destroyQueue(q *kqueue) {
	q.mu.Lock()
	serials := make([]int32, 0, len(q.keys))
	for k := range q.keys {
		serials = append(serials, k)
	}
	dw := q.devices
	q.devices = nil
	q.mu.Unlock()
	// Unwatch first so the key source forgets keys nobody watches; the
	// removal records go into a queue about to close.
	if src := s.keySource(); src != nil {
		for _, k := range serials {
			_ = src.Unwatch(q.eq, k)
		}
	}
	if dw != nil {
		dw.close()
	}
	q.eq.Close()
	s.rs.Remove(q.eq)
	s.mu.Lock()
	delete(s.queues, q.id)
	delete(s.byEQ, q.eq)
	s.mu.Unlock()
}

// ioctl serves the queue ioctls through FUSE, for callers the filter does
// not trap (a process outside PROG's tree that was passed a queue fd).
// FIONREAD never arrives here: the VFS answers it for regular files.
func (s *supervisor) ioctl(r *fuseReq, fh uint64, cmd uint32, arg uint64) (int32, unix.Errno) {
	h := s.handleOf(fh)
	if h == nil {
		return 0, unix.EBADF
	}
	switch cmd {
	case uint32(ioctlSetSize):
		return 0, h.q.setSize(uint32(arg))
	case uint32(ioctlSetFilter):
		return 0, s.setFilterFrom(h.q, int(r.pid), arg)
	}
	return 0, unix.ENOTTY
}

// setFilterFrom reads a struct watch_notification_filter at addr in task
// tid and installs it, as watch_queue_set_filter: NULL removes the filter;
// the 8-byte header first (EFAULT), its checks (EINVAL), then the entries.
func (s *supervisor) setFilterFrom(q *kqueue, tid int, addr uint64) unix.Errno {
	if addr == 0 {
		return q.setFilter(nil)
	}
	var hdr [record.FilterHeaderSize]byte
	if err := readMem(tid, addr, hdr[:]); err != nil {
		return s.memErrno(tid, err)
	}
	nr := le.Uint32(hdr[0:])
	if nr == 0 || nr > record.MaxFilters || le.Uint32(hdr[4:]) != 0 {
		return unix.EINVAL
	}
	b := make([]byte, record.FilterHeaderSize+int(nr)*record.FilterEntrySize)
	copy(b, hdr[:])
	if err := readMem(tid, addr+record.FilterHeaderSize, b[record.FilterHeaderSize:]); err != nil {
		return s.memErrno(tid, err)
	}
	f, err := record.ParseFilter(b)
	if err != nil {
		return unix.EINVAL
	}
	return q.setFilter(f)
}

// fionread is FIONREAD on q: everything the key source can have seen by
// now is posted first, so a program that changes a key and then counts
// sees the record, as it would on the kernel.
func (s *supervisor) fionread(ctx context.Context, q *kqueue) int {
	q.mu.Lock()
	watchesKeys := len(q.keys) > 0
	q.mu.Unlock()
	if watchesKeys {
		if src := s.keySource(); src != nil {
			_ = src.Sync(ctx)
		}
	}
	return q.queuedBytes()
}
