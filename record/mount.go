package record

import (
	"encoding/binary"
	"fmt"
)

// Mount notification subtypes (enum mount_notification_subtype of David
// Howells' "watch_queue: Implement mount topology and attribute change
// notifications", ver #17 of Feb 2020 and ver #2 of Aug 2020 alike).
const (
	MountNew      uint8 = 0 // NOTIFY_MOUNT_NEW_MOUNT: a mount was attached; TriggeredOn = its parent, Aux = the new mount
	MountUnmount  uint8 = 1 // NOTIFY_MOUNT_UNMOUNT: a mount was detached; TriggeredOn = its parent, Aux = the mount
	MountExpiry   uint8 = 2 // NOTIFY_MOUNT_EXPIRY: an automount expired; TriggeredOn = the mount
	MountReadonly uint8 = 3 // NOTIFY_MOUNT_READONLY: the mount's R/O state changed (MountFlagNowRO says which way)
	MountSetattr  uint8 = 4 // NOTIFY_MOUNT_SETATTR: other mount attributes changed (nosuid, nodev, noexec, atime, nosymfollow)
	MountMoveFrom uint8 = 5 // NOTIFY_MOUNT_MOVE_FROM: a mount moved away; TriggeredOn = the old parent, Aux = the mount
	MountMoveTo   uint8 = 6 // NOTIFY_MOUNT_MOVE_TO: a mount moved here; TriggeredOn = the new parent, Aux = the mount
)

// Mount notification type-info flags (ver #2 of Aug 2020, which dropped
// ver #17's NOTIFY_MOUNT_IS_RECURSIVE and renumbered the others).
const (
	// MountFlagInSubtree (NOTIFY_MOUNT_IN_SUBTREE) is set when the event
	// happened in the subtree below the watched directory rather than on
	// the watched mount itself.
	MountFlagInSubtree = InfoFlag0
	// MountFlagNowRO (NOTIFY_MOUNT_IS_NOW_RO): on READONLY, the mount
	// became read-only (clear: read-write); on NEW_MOUNT, the new mount is
	// read-only.
	MountFlagNowRO = InfoFlag0 << 1
	// MountFlagSubmount (NOTIFY_MOUNT_IS_SUBMOUNT): the new mount was made
	// by the kernel (an automount).
	MountFlagSubmount = InfoFlag0 << 2
)

// MountRecordSize is sizeof(struct mount_notification) with the 64-bit
// ids of Aug 2020.
const MountRecordSize = 24

var mountSubtypeNames = [...]string{"new_mount", "unmount", "expiry", "readonly", "setattr", "move_from", "move_to"}

// MountSubtypeName names a mount subtype as the patches' sample does
// (samples/watch_queue/watch_test.c), or "unknown".
func MountSubtypeName(s uint8) string {
	if int(s) < len(mountSubtypeNames) {
		return mountSubtypeNames[s]
	}
	return "unknown"
}

// MountNotification is struct mount_notification: a change in the mount
// topology or a mount's attributes, delivered to watches on the
// directories from TriggeredOn's mount point rootwards.
type MountNotification struct {
	Subtype     uint8
	Tag         Tag    // set by delivery; ignored when posting
	Flags       uint32 // MountFlag* bits (info bits 16..31)
	TriggeredOn uint64 // the mount the change is accounted to (e.g. the new mount's parent)
	Aux         uint64 // the mount added, removed or moved, or 0
}

// AppendBinary appends the 24-byte record.
func (n MountNotification) AppendBinary(b []byte) ([]byte, error) {
	b, _ = Header{Type: TypeMount, Subtype: n.Subtype, Info: MakeInfo(MountRecordSize, n.Tag, uint16(n.Flags>>InfoTypeInfoShift))}.AppendBinary(b)
	b = binary.LittleEndian.AppendUint64(b, n.TriggeredOn)
	return binary.LittleEndian.AppendUint64(b, n.Aux), nil
}

// Mount decodes a mount record. Like the sample, a record of any length
// other than 24 is rejected.
func (r Record) Mount() (MountNotification, error) {
	if r.Type() != TypeMount {
		return MountNotification{}, &RecordError{Reason: fmt.Sprintf("%v is not a mount record", r)}
	}
	if len(r) != MountRecordSize {
		return MountNotification{}, &RecordError{Reason: fmt.Sprintf("mount record of %d bytes, want %d", len(r), MountRecordSize)}
	}
	h := r.Header()
	return MountNotification{
		Subtype: h.Subtype, Tag: h.Tag(), Flags: h.Info & InfoTypeInfo,
		TriggeredOn: binary.LittleEndian.Uint64(r[8:]), Aux: binary.LittleEndian.Uint64(r[16:]),
	}, nil
}

// Superblock notification subtypes (enum superblock_notification_type of
// Howells' "watch_queue: Add superblock notifications", ver #17 of Feb
// 2020, kept by Gabriel Krisman Bertazi's 2020 series), then the
// subtypes Krisman's RFC "fs: Add more superblock error subtypes" (Oct
// 2020) added, which watchq names but never posts.
const (
	SuperblockReadonly     uint8 = 0 // NOTIFY_SUPERBLOCK_READONLY: the filesystem went R/O or R/W (SuperblockFlagNowRO)
	SuperblockError        uint8 = 1 // NOTIFY_SUPERBLOCK_ERROR: an error in the filesystem or its device; a SuperblockErrorNotification
	SuperblockEDQUOT       uint8 = 2 // NOTIFY_SUPERBLOCK_EDQUOT: a quota limit was hit
	SuperblockNetwork      uint8 = 3 // NOTIFY_SUPERBLOCK_NETWORK: network status change
	SuperblockInodeError   uint8 = 4 // NOTIFY_SUPERBLOCK_INODE_ERROR (RFC; never posted)
	SuperblockWarning      uint8 = 5 // NOTIFY_SUPERBLOCK_WARNING (RFC; never posted)
	SuperblockInodeWarning uint8 = 6 // NOTIFY_SUPERBLOCK_INODE_WARNING (RFC; never posted)
	SuperblockMsg          uint8 = 7 // NOTIFY_SUPERBLOCK_MSG (RFC; never posted)
)

// SuperblockFlagNowRO (NOTIFY_SUPERBLOCK_IS_NOW_RO) is set on READONLY
// when the superblock became read-only, clear when it became read-write.
const SuperblockFlagNowRO = InfoFlag0

// Superblock record sizes: struct superblock_notification and struct
// superblock_error_notification.
const (
	SuperblockRecordSize      = 16
	SuperblockErrorRecordSize = 24
)

var superblockSubtypeNames = [...]string{"readonly", "error", "edquot", "network", "inode_error", "warning", "inode_warning", "msg"}

// SuperblockSubtypeName names a superblock subtype as the patches' sample
// does ("readonly", "error", "edquot", "network"; the RFC's additions by
// their constant names), or "unknown".
func SuperblockSubtypeName(s uint8) string {
	if int(s) < len(superblockSubtypeNames) {
		return superblockSubtypeNames[s]
	}
	return "unknown"
}

// SuperblockNotification is struct superblock_notification, and for
// SuperblockError the struct superblock_error_notification that extends
// it with ErrorNumber and ErrorCookie.
type SuperblockNotification struct {
	Subtype uint8
	Tag     Tag    // set by delivery; ignored when posting
	Flags   uint32 // SuperblockFlagNowRO (info bits 16..31)
	// SBID identifies the superblock. The patches used the kernel's
	// s_unique_id, which nothing else exposes; watchq uses the
	// superblock's device as the kernel encodes it (KernelDev:
	// major<<20 | minor, stat(2)'s st_dev of its root, statmount(2)'s
	// sb_dev_*), which is unique among live superblocks.
	SBID uint64
	// ErrorNumber and ErrorCookie exist in SuperblockError records only:
	// the positive errno the filesystem reported (EIO, EUCLEAN for
	// corruption) and how many errors the record stands for (fanotify's
	// error_count; the patches left the cookie 0).
	ErrorNumber uint32
	ErrorCookie uint32
}

// AppendBinary appends the record: 24 bytes for SuperblockError, 16 for
// the others.
func (n SuperblockNotification) AppendBinary(b []byte) ([]byte, error) {
	size := SuperblockRecordSize
	if n.Subtype == SuperblockError {
		size = SuperblockErrorRecordSize
	}
	b, _ = Header{Type: TypeSuperblock, Subtype: n.Subtype, Info: MakeInfo(size, n.Tag, uint16(n.Flags>>InfoTypeInfoShift))}.AppendBinary(b)
	b = binary.LittleEndian.AppendUint64(b, n.SBID)
	if size == SuperblockErrorRecordSize {
		b = binary.LittleEndian.AppendUint32(b, n.ErrorNumber)
		b = binary.LittleEndian.AppendUint32(b, n.ErrorCookie)
	}
	return b, nil
}

// Superblock decodes a superblock record: at least 16 bytes, as the
// sample requires, and at least 24 for SuperblockError.
func (r Record) Superblock() (SuperblockNotification, error) {
	if r.Type() != TypeSuperblock {
		return SuperblockNotification{}, &RecordError{Reason: fmt.Sprintf("%v is not a superblock record", r)}
	}
	h := r.Header()
	want := SuperblockRecordSize
	if h.Subtype == SuperblockError {
		want = SuperblockErrorRecordSize
	}
	if len(r) < want {
		return SuperblockNotification{}, &RecordError{Reason: fmt.Sprintf("superblock %s record of %d bytes, want >= %d", SuperblockSubtypeName(h.Subtype), len(r), want)}
	}
	n := SuperblockNotification{Subtype: h.Subtype, Tag: h.Tag(), Flags: h.Info & InfoTypeInfo, SBID: binary.LittleEndian.Uint64(r[8:])}
	if h.Subtype == SuperblockError {
		n.ErrorNumber = binary.LittleEndian.Uint32(r[16:])
		n.ErrorCookie = binary.LittleEndian.Uint32(r[20:])
	}
	return n, nil
}
