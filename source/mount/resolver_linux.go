package mount

import (
	"sync"

	"github.com/watchq/watchq/record"
)

// maxResolved bounds what a Resolver remembers; past it, it forgets
// everything and starts again.
const maxResolved = 4096

// Resolver names the mounts of records that came from elsewhere (watchqd)
// for display, as Source.MountPoint does for its own: statmount(2) in the
// caller's mount namespace, asked when a record arrives (Note), while the
// mount it names is usually still there, and remembered, so that an
// unmount record is named by its new_mount's answer. Its methods are safe
// for concurrent use.
type Resolver struct {
	mu    sync.Mutex // guards buf and known
	buf   statmountBuf
	known map[uint64]string
}

// NewResolver returns an empty resolver.
func NewResolver() *Resolver { return &Resolver{known: make(map[uint64]string)} }

// Note resolves the mount ids a mount record carries (its triggered_on and
// aux) that the resolver does not know yet. Other records are ignored.
func (r *Resolver) Note(rec record.Record) {
	m, err := rec.Mount()
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range [2]uint64{m.TriggeredOn, m.Aux} {
		if _, ok := r.known[id]; ok || id == 0 {
			continue
		}
		si, err := r.buf.statmount(id)
		if err != nil {
			continue
		}
		if len(r.known) >= maxResolved {
			clear(r.known)
		}
		r.known[id] = si.MountPoint
	}
}

// MountPoint returns the mount point of mount id as last resolved:
// printer.MountResolver.
func (r *Resolver) MountPoint(id uint64) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.known[id]
	if !ok {
		if si, err := r.buf.statmount(id); err == nil {
			p, ok = si.MountPoint, true
			if len(r.known) >= maxResolved {
				clear(r.known)
			}
			r.known[id] = p
		}
	}
	return p, ok
}
