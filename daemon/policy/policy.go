package policy

import (
	"fmt"
	"sync/atomic"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
)

// Policy is the watchq.Policy the daemon's engine runs: the rules of
// watchqd.conf(5), replaceable at run time (SIGHUP) without touching the
// engine, its queues or its watches.
//
// Watching the device list is allowed as a whole (security_watch_devices)
// to any client granted at least one device class; each device record
// then passes PostAllowed only if the watcher is granted its class (USB;
// block errors, subtypes 1..10; block lifecycle, the other block
// subtypes). A publisher record passes only if the watcher may watch its
// type and its generator may publish it. Meta records bypass the policy
// (the engine never asks). Mount and superblock watches need the mounts
// and fs-errors classes and the watched directory's search permission;
// their records pass while the watcher still holds the class. Rules are
// read afresh for every decision, so a
// reload changes what existing watches receive at once.
type Policy struct {
	rules  atomic.Pointer[Rules]
	counts classCounters // posts' outcomes by class (counts.go, CountPost)
}

// New returns a policy enforcing rs.
func New(rs *Rules) *Policy {
	p := &Policy{}
	p.rules.Store(rs)
	return p
}

// Set replaces the rules; decisions made afterwards use rs.
func (p *Policy) Set(rs *Rules) { p.rules.Store(rs) }

// Errors PostAllowed returns: preallocated, as PostAllowed runs for every
// record and watch and must not allocate.
var (
	errPostClass     = &watchq.PermissionError{Op: "post", Reason: "watcher not granted this device record class"}
	errPostWatch     = &watchq.PermissionError{Op: "post", Reason: "watcher may not watch this publisher type"}
	errPostPublisher = &watchq.PermissionError{Op: "post", Reason: "generator may not publish this type"}
	errPostType      = &watchq.PermissionError{Op: "post", Reason: "record type not delivered on this list"}
)

// Class returns the device record class of a record of type t and
// subtype s, or 0 if it is not a device record.
func Class(t record.Type, s uint8) protocol.Sources {
	switch t {
	case record.TypeUSB:
		return protocol.SourceUSB
	case record.TypeBlock:
		if record.IsBlockError(s) {
			return protocol.SourceBlockErrors
		}
		return protocol.SourceBlockLifecycle
	}
	return 0
}

// WatchAllowed implements watchq.Policy.
func (p *Policy) WatchAllowed(w *watchq.Cred, obj watchq.Object) error {
	rs := p.rules.Load()
	switch obj.Kind {
	case watchq.KindDevices:
		if rs.Devices(w) != 0 {
			return nil
		}
		return &watchq.PermissionError{Op: "watch", Reason: fmt.Sprintf(
			"%s is granted none of usb, block-errors, block-lifecycle by %s", who(w), rs.Source)}
	case watchq.KindKey:
		// The key source has made the kernel's own check, View in the
		// watcher's context (keys.Source.WatchAs, as keyctl_watch_key's
		// lookup_user_key(..., KEY_NEED_VIEW)); the kernel asks nothing
		// more, and neither does watchqd by default.
		return nil
	case watchq.KindPublisher:
		t := record.Type(obj.ID)
		if obj.ID <= record.ObjectID(record.TypeMax) && rs.MayWatch(w, t) {
			return nil
		}
		return &watchq.PermissionError{Op: "watch", Reason: fmt.Sprintf(
			"%s may not watch publisher type %#x under %s", who(w), obj.ID, rs.Source)}
	case watchq.KindMount, watchq.KindSuperblock:
		return mountWatchAllowed(rs, w, obj)
	}
	return &watchq.PermissionError{Op: "watch", Reason: fmt.Sprintf("watchqd serves no %v watches", obj.Kind)}
}

// PostAllowed implements watchq.Policy (security_post_notification).
func (p *Policy) PostAllowed(w, gen *watchq.Cred, rec record.Record) error {
	rs := p.rules.Load()
	t := rec.Type()
	if t.IsPublisher() {
		if !rs.MayWatch(w, t) {
			return errPostWatch
		}
		if gen == nil || !rs.MayPublish(gen, t) {
			return errPostPublisher
		}
		return nil
	}
	if t == record.TypeKey {
		// Only key lists carry key records, and a watch on a key list
		// passed View when it was set: the kernel posts to it from then
		// on (kernel/watch_queue.c:__post_watch_notification checks
		// only the filter and the LSM's security_post_notification).
		return nil
	}
	if mc := classOf(0, t); mc != 0 {
		if rs.MountClasses(w)&mc == 0 {
			return errPostMount
		}
		return nil
	}
	c := Class(t, rec.Subtype())
	if c == 0 {
		return errPostType
	}
	if rs.Devices(w)&c == 0 {
		return errPostClass
	}
	return nil
}

// PublishAllowed rules on a publish request: c must be granted type t.
func (p *Policy) PublishAllowed(c *watchq.Cred, t record.Type) error {
	rs := p.rules.Load()
	if rs.MayPublish(c, t) {
		return nil
	}
	return &watchq.PermissionError{Op: "publish", Reason: fmt.Sprintf(
		"%s may not publish type %#x under %s", who(c), uint32(t), rs.Source)}
}

// Devices returns the device record classes c is granted.
func (p *Policy) Devices(c *watchq.Cred) protocol.Sources { return p.rules.Load().Devices(c) }

func who(c *watchq.Cred) string {
	return fmt.Sprintf("uid %d (gid %d, pid %d%s)", c.UID, c.GID, c.PID, labelSuffix(c.Label))
}

func labelSuffix(l string) string {
	if l == "" {
		return ""
	}
	return ", label " + l
}
