package mount

import (
	"errors"
	"strconv"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// Backend selects how a Source learns about mount topology changes.
type Backend uint8

// Backends.
const (
	Auto      Backend = iota // Fanotify where the kernel has it, else Mountinfo
	Fanotify                 // fanotify FAN_MNT_ATTACH/FAN_MNT_DETACH on the namespace (Linux 6.15)
	Mountinfo                // poll(POLLPRI) on /proc/self/mountinfo and a diff
)

// String names the backend.
func (b Backend) String() string {
	switch b {
	case Auto:
		return "auto"
	case Fanotify:
		return "fanotify"
	case Mountinfo:
		return "mountinfo"
	}
	return "backend(" + strconv.Itoa(int(b)) + ")"
}

// ParseBackend parses "auto", "fanotify" or "mountinfo".
func ParseBackend(s string) (Backend, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "fanotify":
		return Fanotify, nil
	case "mountinfo":
		return Mountinfo, nil
	}
	return Auto, errors.New("mount: backend " + strconv.Quote(s) + ", want auto, fanotify or mountinfo")
}

// BackendEnv overrides the Auto backend choice: "fanotify" or "mountinfo".
const BackendEnv = "WATCHQ_MOUNT_BACKEND"

// Config configures Open.
type Config struct {
	// Engine makes the watch lists and holds the policy. Required.
	Engine *watchq.Engine
	// Backend selects the topology backend; Auto (the zero value) picks
	// Fanotify when the kernel has it, unless $WATCHQ_MOUNT_BACKEND says
	// otherwise.
	Backend Backend
	// Namespace is the path of the mount namespace to report (a
	// /proc/PID/ns/mnt file); "" means the calling thread's namespace when
	// Open is called. Paths given to the Watch methods are resolved in it.
	Namespace string
	// Generator is the credential records are posted with; nil means
	// watchq.SystemCred (the kernel does not say who changed a mount).
	Generator *watchq.Cred
	// NoFSErrors turns off FAN_FS_ERROR: superblock watches then report
	// read-only transitions only.
	NoFSErrors bool
}

// Capabilities says what the source does on this machine, and why not.
type Capabilities struct {
	Backend   Backend // the topology backend in use (never Auto)
	Fanotify  error   // why the fanotify mount backend is not in use; nil when it is
	UniqueIDs error   // why mount ids are mountinfo's 32-bit ids; nil when they are the 64-bit unique ids
	FSErrors  error   // why superblock error records cannot be posted; nil when FAN_FS_ERROR works
}

// Stats counts what the source did. Every field only grows.
type Stats struct {
	Events     uint64 // kernel events read (fanotify events; mountinfo changes)
	Posted     uint64 // records posted (each to every watch it reached)
	Unresolved uint64 // mounts gone before their details could be read (posted with triggered_on 0)
	Overflows  uint64 // fanotify queue overflows (each posted as a loss, then a resync)
	Scans      uint64 // mountinfo rereads
}

// Errors.
var (
	// ErrClosed is returned by a closed Source. It matches
	// watchq.ErrClosed.
	ErrClosed = watchq.ErrClosed
	// ErrNotSupported matches the errors of systems without the kernel
	// interfaces the source needs.
	ErrNotSupported = errors.New("mount: not available")
	// ErrNoFSErrors is returned (wrapped, with the reason) by
	// WatchSuperblock when the watch is in place but the filesystem's
	// errors cannot be watched (FAN_FS_ERROR unavailable, or the
	// filesystem does not support it): the watch reports read-only
	// transitions only.
	ErrNoFSErrors = errors.New("mount: filesystem errors cannot be watched here")
)

// ObjectID is the engine's object id of a mount watch: the mount id its
// removal record carries (remove_watch_list(mnt->mnt_watchers, mnt_id)).
func ObjectID(mountID uint64) record.ObjectID { return record.ObjectID(mountID) }

// SuperblockID is the engine's object id of a superblock watch, and the
// sb_id of its records: the superblock's device as the kernel encodes it.
func SuperblockID(major, minor uint32) record.ObjectID {
	return record.ObjectID(record.KernelDev(major, minor))
}
