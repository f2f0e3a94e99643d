package policy

import (
	"fmt"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// MountClass is a set of grants of the mount source's watches (watch=mounts,
// watch=fs-errors in watchqd.conf(5)): the daemon's security_watch_mount
// and security_watch_sb.
type MountClass uint8

// Mount classes.
const (
	// ClassMounts grants mount topology watches (watch_mount(2),
	// watchq.KindMount) and their records (record.TypeMount).
	ClassMounts MountClass = 1 << iota
	// ClassFSErrors grants superblock watches (watch_sb(2),
	// watchq.KindSuperblock) and their records (record.TypeSuperblock):
	// filesystem errors and read-only transitions.
	ClassFSErrors
)

// className is each class's watch item in watchqd.conf(5).
var className = map[string]MountClass{"mounts": ClassMounts, "fs-errors": ClassFSErrors}

// errPostMount is PostAllowed's refusal of a mount or superblock record to
// a watcher no longer granted its class (the rules were reloaded).
var errPostMount = &watchq.PermissionError{Op: "post", Reason: "watcher not granted this mount record class"}

// classOf returns the class of a watch kind or record type, or 0.
func classOf(k watchq.ObjectKind, t record.Type) MountClass {
	switch {
	case k == watchq.KindMount || t == record.TypeMount:
		return ClassMounts
	case k == watchq.KindSuperblock || t == record.TypeSuperblock:
		return ClassFSErrors
	}
	return 0
}

// MountClasses returns the mount classes c is granted.
func (rs *Rules) MountClasses(c *watchq.Cred) MountClass {
	var s MountClass
	for i := range rs.rules {
		if r := &rs.rules[i]; r.classes != 0 && r.matches(c) {
			s |= r.classes
		}
	}
	return s
}

// mountWatchAllowed rules on a mount or superblock watch: the watcher must
// be granted the class, and then pass the discretionary check of
// watchq.DefaultPolicy on the watched directory (its owner and search
// bits, which the mount source puts in obj), as watch_mount's
// inode_permission(MAY_EXEC) ran before security_watch_mount.
func mountWatchAllowed(rs *Rules, w *watchq.Cred, obj watchq.Object) error {
	c := classOf(obj.Kind, 0)
	if rs.MountClasses(w)&c == 0 {
		name := "mounts"
		if c == ClassFSErrors {
			name = "fs-errors"
		}
		return &watchq.PermissionError{Op: "watch", Reason: fmt.Sprintf(
			"%s is not granted watch=%s by %s", who(w), name, rs.Source)}
	}
	return watchq.DefaultPolicy{}.WatchAllowed(w, obj)
}
