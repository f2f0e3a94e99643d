//go:build linux

package mount

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What golang.org/x/sys/unix (v0.50) lacks for statmount(2) and
// listmount(2) (Linux 6.8), from include/uapi/linux/mount.h: the request
// mask bits, LSMT_ROOT, and the layout of struct statmount. The syscall
// numbers (SYS_STATMOUNT, SYS_LISTMOUNT), STATX_MNT_ID_UNIQUE,
// MNT_ID_REQ_SIZE_VER1 and MOUNT_ATTR_* are x/sys's.
const (
	statmountSBBasic  = 0x1  // STATMOUNT_SB_BASIC: sb_dev_*, sb_magic, sb_flags
	statmountMntBasic = 0x2  // STATMOUNT_MNT_BASIC: mnt_id*, mnt_parent_id*, mnt_attr, propagation
	statmountMntPoint = 0x10 // STATMOUNT_MNT_POINT: mnt_point string
	statmountFSType   = 0x20 // STATMOUNT_FS_TYPE: fs_type string

	lsmtRoot = ^uint64(0) // LSMT_ROOT: the namespace's root mount

	// SB_RDONLY in statmount's sb_flags (the superblock's s_flags, as
	// include/linux/fs.h numbers them).
	sbRdonly = 0x1
)

// struct statmount field offsets (include/uapi/linux/mount.h, stable
// since 6.8; later kernels only add fields in the spare space).
const (
	smSize        = 0   // __u32 size
	smMask        = 8   // __u64 mask
	smSBDevMajor  = 16  // __u32 sb_dev_major
	smSBDevMinor  = 20  // __u32 sb_dev_minor
	smSBFlags     = 32  // __u32 sb_flags
	smFSType      = 36  // __u32 fs_type (string offset)
	smMntID       = 40  // __u64 mnt_id
	smParentID    = 48  // __u64 mnt_parent_id
	smMntIDOld    = 56  // __u32 mnt_id_old
	smParentIDOld = 60  // __u32 mnt_parent_id_old
	smMntAttr     = 64  // __u64 mnt_attr (MOUNT_ATTR_*)
	smMntPoint    = 108 // __u32 mnt_point (string offset)
	smStrings     = 512 // sizeof(struct statmount): str[] starts here
)

// statmountInfo is what the source needs of statmount(2).
type statmountInfo struct {
	ID, ParentID       uint64 // unique ids
	OldID, OldParentID uint32 // the ids /proc/*/mountinfo shows
	DevMajor, DevMinor uint32 // the superblock's device
	SBFlags            uint32 // SB_* flags
	Attr               uint64 // MOUNT_ATTR_* flags
	MountPoint         string // relative to the caller's root
	FSType             string
}

// statmountBuf is reused by one goroutine's statmount calls.
type statmountBuf struct{ b []byte }

// errNoStatmount reports a kernel older than 6.8.
var errNoStatmount = errors.New("statmount(2) not available (Linux 6.8+)")

// statmount asks the kernel about the mount with unique id id, in the
// caller's mount namespace. ENOENT: no such mount (any more).
func (sb *statmountBuf) statmount(id uint64) (statmountInfo, error) {
	if sb.b == nil {
		sb.b = make([]byte, 4096)
	}
	var req [unix.MNT_ID_REQ_SIZE_VER1]byte
	binary.NativeEndian.PutUint32(req[0:], unix.MNT_ID_REQ_SIZE_VER1)
	binary.NativeEndian.PutUint64(req[8:], id)
	binary.NativeEndian.PutUint64(req[16:], statmountSBBasic|statmountMntBasic|statmountMntPoint|statmountFSType)
	for {
		_, _, e := unix.Syscall6(unix.SYS_STATMOUNT, uintptr(unsafe.Pointer(&req[0])),
			uintptr(unsafe.Pointer(&sb.b[0])), uintptr(len(sb.b)), 0, 0, 0)
		switch e {
		case 0:
		case unix.EOVERFLOW:
			sb.b = make([]byte, 2*len(sb.b))
			continue
		case unix.ENOSYS:
			return statmountInfo{}, errNoStatmount
		default:
			return statmountInfo{}, e
		}
		break
	}
	b := sb.b
	le := binary.NativeEndian
	str := func(off int) string {
		o := smStrings + int(le.Uint32(b[off:]))
		if o >= len(b) {
			return ""
		}
		s := b[o:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return string(s)
	}
	return statmountInfo{
		ID: le.Uint64(b[smMntID:]), ParentID: le.Uint64(b[smParentID:]),
		OldID: le.Uint32(b[smMntIDOld:]), OldParentID: le.Uint32(b[smParentIDOld:]),
		DevMajor: le.Uint32(b[smSBDevMajor:]), DevMinor: le.Uint32(b[smSBDevMinor:]),
		SBFlags: le.Uint32(b[smSBFlags:]), Attr: le.Uint64(b[smMntAttr:]),
		MountPoint: str(smMntPoint), FSType: str(smFSType),
	}, nil
}

// listmount returns the unique ids of every mount in the caller's mount
// namespace (listmount(2) from LSMT_ROOT, paged).
func listmount() ([]uint64, error) {
	var out []uint64
	ids := make([]uint64, 512)
	last := uint64(0)
	for {
		var req [unix.MNT_ID_REQ_SIZE_VER1]byte
		binary.NativeEndian.PutUint32(req[0:], unix.MNT_ID_REQ_SIZE_VER1)
		binary.NativeEndian.PutUint64(req[8:], lsmtRoot)
		binary.NativeEndian.PutUint64(req[16:], last)
		n, _, e := unix.Syscall6(unix.SYS_LISTMOUNT, uintptr(unsafe.Pointer(&req[0])),
			uintptr(unsafe.Pointer(&ids[0])), uintptr(len(ids)), 0, 0, 0)
		if e == unix.ENOSYS {
			return nil, errNoStatmount
		}
		if e != 0 {
			return nil, e
		}
		out = append(out, ids[:n]...)
		if int(n) < len(ids) {
			return out, nil
		}
		last = ids[n-1]
	}
}

// goLocked runs f on a new goroutine locked to an OS thread that is not
// the process's main thread, and never unlocks it: the thread dies with
// the goroutine. f may change the thread's namespaces. The main thread is
// avoided because the Go runtime cannot end it: a goroutine exiting locked
// to it leaves it parked for good, still in whatever namespace f put it
// in, and /proc/self names its namespaces.
func goLocked(f func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			f()
			return
		}
		// On the main thread: keep it busy, so the new goroutine cannot
		// be scheduled here, until that one has a thread of its own.
		started := make(chan struct{})
		goLocked(func() { close(started); f() })
		<-started
		runtime.UnlockOSThread()
	}()
}
