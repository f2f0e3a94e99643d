//go:build linux

package keys

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// kernelBackend relays one kernel notification pipe into the engine.
type kernelBackend struct {
	s    *Source
	pipe *kernel.Pipe
	rc   syscall.RawConn

	// relayMu is held from the read(2) that takes records off the pipe
	// until they are posted, so Sync can tell "drained" from "in flight".
	relayMu sync.Mutex

	// expect counts removal records the kernel will send because we
	// removed a watch ourselves; the relay swallows them rather than
	// destroying a newer watch list on the same key. Guarded by Source.mu.
	expect map[int32]int

	// orphans are kernel watches the source no longer uses but could not
	// remove: KEYCTL_WATCH_KEY -1 failed (the process lost View of the
	// key, or the key was revoked, after the last engine watch went). The
	// kernel still delivers their records, which the relay drops (no
	// entry); the next Watch of the key adopts the kernel watch, which
	// KEYCTL_WATCH_KEY would refuse to place again (EBUSY), and the key's
	// kernel removal record ends it. Guarded by Source.mu.
	orphans map[int32]bool

	// Relay statistics, guarded by relayMu.
	records, losses uint64
}

func newKernelBackend(s *Source, notes int) (*kernelBackend, error) {
	if notes == 0 {
		notes = record.MaxNotes
	}
	p, err := kernel.Open(0)
	if err != nil {
		return nil, err
	}
	if err := p.SetSize(notes); err != nil {
		p.Close()
		return nil, err
	}
	// Only key records (and the meta records that bypass filters).
	if err := p.SetFilter(record.TypeFilter(record.TypeKey)); err != nil {
		p.Close()
		return nil, err
	}
	rc, err := p.SyscallConn()
	if err != nil {
		p.Close()
		return nil, err
	}
	return &kernelBackend{s: s, pipe: p, rc: rc, expect: make(map[int32]int), orphans: make(map[int32]bool)}, nil
}

// addLocked places the process's one kernel watch on the key, or adopts
// the orphaned one it still has. The kernel tag is always 0: records are
// routed by key id, and each engine watch stamps its own tag.
func (b *kernelBackend) addLocked(e *entry) error {
	if b.orphans[e.serial] {
		delete(b.orphans, e.serial)
		return nil
	}
	return b.pipe.WatchKey(e.serial, 0)
}

// removeLocked drops the kernel watch; the kernel answers with a removal
// record that the relay must not mistake for the key's destruction. If the
// kernel refuses, the watch is kept as an orphan (see orphans); EBADSLT
// means there is none left to remove (the key's removal record is on its
// way) and a closed pipe holds no watches.
func (b *kernelBackend) removeLocked(e *entry) {
	err := b.pipe.UnwatchKey(e.serial)
	switch {
	case err == nil:
		b.expect[e.serial]++
	case errors.Is(err, unix.EBADSLT), errors.Is(err, os.ErrClosed):
	default:
		b.orphans[e.serial] = true
	}
}

// run is the relay: read whole records off the pipe through the runtime
// poller and post each into its key's watch list.
func (b *kernelBackend) run() {
	buf := make([]byte, 4096) // whole records; 32 at least
	for {
		var n int
		var rerr error
		err := b.rc.Read(func(fd uintptr) bool {
			b.relayMu.Lock()
			n, rerr = unix.Read(int(fd), buf)
			if rerr == unix.EAGAIN {
				b.relayMu.Unlock()
				return false
			}
			return true
		})
		if err != nil {
			return // pipe closed
		}
		if rerr != nil || n == 0 {
			b.relayMu.Unlock()
			if rerr == unix.EINTR {
				continue
			}
			return
		}
		b.relay(buf[:n])
		b.relayMu.Unlock()
	}
}

// relay posts the records of one read. Corresponds to the kernel's fan-out
// in kernel/watch_queue.c:__post_watch_notification, one level up.
func (b *kernelBackend) relay(p []byte) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for rec, err := range record.Records(p) {
		if err != nil {
			return // the kernel never sends malformed records
		}
		switch {
		case rec.Type() == record.TypeKey:
			k, err := rec.Key()
			if err != nil {
				continue
			}
			b.records++
			if e := s.entries[int32(k.KeyID)]; e != nil {
				e.wl.Post(rec, s.gen, record.ObjectID(k.KeyID))
				if e.wl.Len() == 0 {
					s.dropLocked(e) // every queue watching it was closed
				}
			}
		case rec.IsLoss():
			// The kernel does not say whose records were lost:
			// every watched key reports loss.
			b.losses++
			for _, e := range s.entries {
				e.wl.PostLoss(1)
			}
		case rec.IsRemoval():
			m, err := rec.Removal()
			if err != nil || m.ID == 0 {
				continue
			}
			serial := int32(m.ID)
			if b.orphans[serial] {
				delete(b.orphans, serial) // the key is gone
				continue
			}
			if b.expect[serial] > 0 {
				if b.expect[serial]--; b.expect[serial] == 0 {
					delete(b.expect, serial)
				}
				continue
			}
			// The key was destroyed (security/keys/gc.c:
			// key_gc_unused_keys → remove_watch_list).
			if e := s.entries[serial]; e != nil {
				s.destroyLocked(e)
			}
		}
	}
}

// sync waits until the pipe is empty with nothing in flight.
func (b *kernelBackend) sync(ctx context.Context) error {
	for {
		b.relayMu.Lock()
		n, err := b.pipe.Queued()
		b.relayMu.Unlock()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (b *kernelBackend) close() {
	b.pipe.Close() // wakes the relay: its RawConn.Read fails
}
