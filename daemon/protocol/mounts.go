package protocol

import (
	"bytes"
	"encoding/binary"
	"path"
)

// MaxPath is the longest path WatchMount and WatchSuperblock carry, in
// bytes: PATH_MAX (4096, include/uapi/linux/limits.h) less its NUL, as
// getname(9) refuses longer names with ENAMETOOLONG.
const MaxPath = 4095

// WatchMount is watch_mount(2): Tag 0..255 watches the mounts at and
// below directory Path, resolved in the client's own mount namespace; -1
// removes the watch on Path. Path is absolute, at most MaxPath bytes, with
// no NUL byte.
type WatchMount struct {
	Queue uint32
	Tag   int32
	Path  string
}

// WatchSuperblock is watch_sb(2): Tag 0..255 watches the filesystem that
// absolute Path is on, in the client's own mount namespace; -1 removes the
// watch. Path as for WatchMount.
type WatchSuperblock struct {
	Queue uint32
	Tag   int32
	Path  string
}

// Op implements Request.
func (WatchMount) Op() Op      { return OpWatchMount }
func (WatchSuperblock) Op() Op { return OpWatchSuperblock }

// AppendBinary implements Request: queue, tag, then the path's bytes (the
// rest of the body).
func (m WatchMount) AppendBinary(b []byte) ([]byte, error) {
	return append(u32s(b, m.Queue, uint32(m.Tag)), m.Path...), nil
}

// AppendBinary implements Request, as WatchMount's.
func (m WatchSuperblock) AppendBinary(b []byte) ([]byte, error) {
	return append(u32s(b, m.Queue, uint32(m.Tag)), m.Path...), nil
}

// parsePathRequest decodes the body WatchMount and WatchSuperblock share,
// checking the path's bounds before anything is copied: EINVAL for a body
// under 9 bytes, a relative path or a NUL byte, ENAMETOOLONG past MaxPath.
// Relative paths are refused because the daemon's working directory is
// not the client's; "." and ".." components are left to the lookup, as
// the kernel leaves them.
func parsePathRequest(op Op, body []byte) (queue uint32, tag int32, p string, err error) {
	if len(body) < 9 {
		return 0, 0, "", errInval("%v body is %d bytes, want 8 and a path", op, len(body))
	}
	raw := body[8:]
	switch {
	case len(raw) > MaxPath:
		return 0, 0, "", errNameTooLong("%v: path of %d bytes is longer than PATH_MAX-1 (%d)", op, len(raw), MaxPath)
	case bytes.IndexByte(raw, 0) >= 0:
		return 0, 0, "", errInval("%v: path holds a NUL byte", op)
	case !path.IsAbs(string(raw)):
		return 0, 0, "", errInval("%v: path %q is relative; send an absolute path", op, raw)
	}
	return binary.NativeEndian.Uint32(body), int32(binary.NativeEndian.Uint32(body[4:])), string(raw), nil
}

// MountWatchReply is the reply to WatchMount and WatchSuperblock.
type MountWatchReply struct {
	// Flags is a set of MountNoFSErrors.
	Flags uint32
	// Reason says why, when a flag is set.
	Reason string
}

// MountWatchReply flags.
const (
	// MountNoFSErrors: the superblock watch is in place, but the
	// filesystem's errors cannot be watched (no FAN_FS_ERROR for it);
	// it reports read-only transitions only.
	MountNoFSErrors uint32 = 1 << iota

	mountReplyFlags = MountNoFSErrors
)

// maxReason bounds a reply's reason text.
const maxReason = 1024

// AppendBinary appends the reply: flags, then the reason's bytes.
func (r MountWatchReply) AppendBinary(b []byte) ([]byte, error) {
	return append(u32s(b, r.Flags), r.Reason[:min(len(r.Reason), maxReason)]...), nil
}

// ParseMountWatchReply decodes a MountWatchReply; an empty body (a removal)
// is the zero reply.
func ParseMountWatchReply(body []byte) (MountWatchReply, error) {
	if len(body) == 0 {
		return MountWatchReply{}, nil
	}
	if len(body) < 4 || len(body) > 4+maxReason {
		return MountWatchReply{}, errInval("mount watch reply of %d bytes, want 4..%d", len(body), 4+maxReason)
	}
	r := MountWatchReply{Flags: binary.NativeEndian.Uint32(body), Reason: string(body[4:])}
	if r.Flags&^mountReplyFlags != 0 {
		return MountWatchReply{}, errInval("mount watch reply: unknown flags %#x", r.Flags&^mountReplyFlags)
	}
	return r, nil
}
