//go:build linux && amd64

package run

import (
	"encoding/binary"
	"errors"
	"sync"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// A notification pipe as PROG sees it: an engine queue that watches post
// into (tags, filter, policy: the engine's), drained into a ring that
// behaves as fs/pipe.c and kernel/watch_queue.c do for a pipe with a
// watch_queue. The engine queue only buffers between drains; every read,
// poll and FIONREAD drains it first, so the ring holds what the kernel's
// pipe would hold at that moment.
//
// The ring is the kernel's, not the engine's, because the two differ in
// what a reader sees: the kernel's loss record carries no count (info is
// 8), is emitted after the flagged record only if more records follow in
// the same read and otherwise opens the next read, is not counted by
// FIONREAD and does not make poll() report POLLIN; FIONREAD counts bytes.

const (
	modeRead  = 1
	modeWrite = 2

	// engineNotes sizes the engine queue behind a sized ring: it holds
	// records between drains, so it only needs to absorb one burst.
	engineNotes = record.MaxNotes

	// pipeDefBuffers is PIPE_DEF_BUFFERS, a pipe's max_usage until
	// IOC_WATCH_QUEUE_SET_SIZE sets it to the number of pages.
	pipeDefBuffers = 16
)

type knote struct {
	n    uint8
	loss bool // PIPE_BUF_FLAG_LOSS: records were lost after this one
	b    [record.NoteSize]byte
}

type pendingRead struct {
	r    *fuseReq
	size uint32
}

// kqueue is one notification pipe: every open file of its FUSE file, the
// ends pipe2 made and any re-opened through /proc/PID/fd.
type kqueue struct {
	id  uint64
	sup *supervisor
	eq  *watchq.Queue // immutable

	mu sync.Mutex // guards everything below
	// The ring: capacity nr_notes = 32 * nrPages; nrPages is 0 until sized.
	ring         []knote
	first, count int
	nrPages      int
	noteLoss     bool // pipe->note_loss: a loss record opens the next read
	// Open file descriptions by access mode (pipe->readers, ->writers).
	readers, writers int
	waiting          []pendingRead    // blocked reads, in arrival order
	pollers          map[uint64]uint8 // FUSE poll handles (kh) → mode
	keys             map[int32]bool   // key serials watched (for cleanup)
	devices          *deviceWatch     // the device watch, if any
	closed           bool
	scratch          [record.NoteSize * 8]byte
}

func newKqueue(sup *supervisor, id uint64) *kqueue {
	return &kqueue{
		id: id, sup: sup, eq: watchq.NewQueue(),
		pollers: make(map[uint64]uint8), keys: make(map[int32]bool),
	}
}

// drainLocked moves everything the engine queue holds into the ring.
func (q *kqueue) drainLocked() {
	for {
		n, err := q.eq.TryRead(q.scratch[:])
		if err != nil {
			return // ErrWouldBlock, or ErrClosed
		}
		for rec, err := range record.Records(q.scratch[:n]) {
			if err != nil {
				break
			}
			if rec.IsLoss() {
				q.lossLocked()
				continue
			}
			q.postLocked(rec)
		}
	}
}

// postLocked is post_one_notification: queue rec, or, when the ring is
// full, flag the newest queued record and drop rec. An unsized ring loses
// everything without a trace (the kernel flags a pipe buffer that is not
// in use).
func (q *kqueue) postLocked(rec []byte) {
	if q.nrPages == 0 {
		return
	}
	if q.count >= len(q.ring) {
		q.ring[q.slot(q.count-1)].loss = true
		return
	}
	n := &q.ring[q.slot(q.count)]
	n.n = uint8(copy(n.b[:], rec))
	n.loss = false
	q.count++
}

// lossLocked accounts records lost before they reached the ring (the
// engine queue overflowed between drains, or a source reported loss).
func (q *kqueue) lossLocked() {
	if q.count > 0 {
		q.ring[q.slot(q.count-1)].loss = true
	} else if q.nrPages > 0 {
		q.noteLoss = true
	}
}

func (q *kqueue) slot(i int) int { return (q.first + i) % len(q.ring) }

// putKernelLoss writes the kernel's loss record: type META, subtype LOSS,
// info = 8 (no tag, no count).
func putKernelLoss(b []byte) {
	record.Header{Type: record.TypeMeta, Subtype: record.MetaLoss, Info: record.MakeInfo(record.LossSize, 0, 0)}.Put(b)
}

// readLocked is pipe_read up to the point where it would sleep: it packs
// whole records into dst and returns their length, ENOBUFS when the first
// thing to read does not fit, or wait set when it would block (nothing
// read, writers remain).
func (q *kqueue) readLocked(dst []byte) (n int, errno unix.Errno, wait bool) {
	total := len(dst)
	if total == 0 {
		return 0, 0, false
	}
	ret := 0
	for {
		if q.noteLoss {
			if total < record.LossSize {
				if ret == 0 {
					return 0, unix.ENOBUFS, false
				}
				break
			}
			putKernelLoss(dst[ret:])
			ret += record.LossSize
			total -= record.LossSize
			q.noteLoss = false
		}
		if q.count > 0 {
			nt := &q.ring[q.first]
			if int(nt.n) > total {
				if ret == 0 {
					return 0, unix.ENOBUFS, false
				}
				break
			}
			copy(dst[ret:], nt.b[:nt.n])
			ret += int(nt.n)
			total -= int(nt.n)
			if nt.loss {
				q.noteLoss = true // pipe_update_tail
			}
			q.first = (q.first + 1) % len(q.ring)
			q.count--
			if total == 0 {
				break
			}
			if q.count > 0 {
				continue
			}
		}
		if q.writers == 0 {
			break
		}
		if ret > 0 {
			break
		}
		return 0, 0, true
	}
	return ret, 0, false
}

// maxUsage is pipe->max_usage: PIPE_DEF_BUFFERS, then the number of pages
// watch_queue_set_size allocated. The write end polls writable while fewer
// records than that are queued.
func (q *kqueue) maxUsage() int {
	if q.nrPages == 0 {
		return pipeDefBuffers
	}
	return q.nrPages
}

// revents is pipe_poll for an open file of the given mode.
func (q *kqueue) reventsLocked(mode uint8) uint32 {
	var rev uint32
	if mode&modeRead != 0 {
		if q.count > 0 {
			rev |= unix.POLLIN | unix.EPOLLRDNORM
		}
		if q.writers == 0 {
			rev |= unix.POLLHUP
		}
	}
	if mode&modeWrite != 0 {
		if q.count < q.maxUsage() {
			rev |= unix.POLLOUT | unix.EPOLLWRNORM
		}
		if q.readers == 0 {
			rev |= unix.POLLERR
		}
	}
	return rev
}

// wakeLocked answers blocked reads that can now complete, in arrival order
// (the kernel wakes one exclusive reader, which wakes the next if records
// remain), and wakes every poller.
func (q *kqueue) wakeLocked() {
	for len(q.waiting) > 0 {
		p := q.waiting[0]
		buf := make([]byte, min(p.size, maxReadBuf))
		n, errno, wait := q.readLocked(buf)
		if wait {
			break
		}
		q.waiting = q.waiting[1:]
		q.sup.forgetPending(p.r.unique)
		q.sup.fuse.reply(p.r, errno, buf[:n])
	}
	for kh := range q.pollers {
		q.sup.fuse.notifyPoll(kh)
	}
}

// maxReadBuf bounds what one read can return: a full ring of the largest
// records and a loss record.
const maxReadBuf = record.MaxNotes*record.NoteSize + record.LossSize

// setSize is watch_queue_set_size, checks in its order.
func (q *kqueue) setSize(nr uint32) unix.Errno {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.nrPages != 0 {
		return unix.EBUSY
	}
	if nr < 1 || nr > record.MaxNotes {
		return unix.EINVAL
	}
	pages := (int(nr) + record.NotesPerPage - 1) / record.NotesPerPage
	if _, err := q.eq.SetSize(engineNotes); err != nil {
		return errnoOf(err)
	}
	q.ring = make([]knote, pages*record.NotesPerPage)
	q.nrPages = pages
	q.wakeLocked() // the write end's POLLOUT threshold changed
	return 0
}

// setFilter installs the filter (nil removes it). Records already queued
// stay, as the kernel's do.
func (q *kqueue) setFilter(f *record.Filter) unix.Errno {
	if err := q.eq.SetFilter(f); err != nil {
		return errnoOf(err)
	}
	return 0
}

// queuedBytes is FIONREAD: the bytes of the records in the ring (a pending
// loss record is not counted, as pipe_ioctl does not count it).
func (q *kqueue) queuedBytes() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.drainLocked()
	n := 0
	for i := range q.count {
		n += int(q.ring[q.slot(i)].n)
	}
	return n
}

// errnoOf maps an engine or source error to the errno the kernel would
// return.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

var le = binary.LittleEndian
