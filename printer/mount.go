package printer

import (
	"strconv"

	"github.com/watchq/watchq/record"
)

// mountPoints is what the sample and line formats add to a mount record
// when mounts resolves its ids: " on=PATH mnt=PATH".
func mountPoints(r record.Record, mounts MountResolver) string {
	if mounts == nil || r.Type() != record.TypeMount {
		return ""
	}
	m, err := r.Mount()
	if err != nil {
		return ""
	}
	s := ""
	if path, ok := mounts(m.TriggeredOn); ok {
		s += " on=" + quotePath(path)
	}
	if path, ok := mounts(m.Aux); ok && m.Aux != 0 {
		s += " mnt=" + quotePath(path)
	}
	return s
}

// resolveMounts fills a mount record's mount points.
func (o *Object) resolveMounts(mounts MountResolver) {
	if mounts == nil || o.MountID == nil {
		return
	}
	if path, ok := mounts(*o.MountID); ok {
		o.MountPoint = ptr(path)
	}
	if path, ok := mounts(*o.AuxMountID); ok && *o.AuxMountID != 0 {
		o.AuxMountPoint = ptr(path)
	}
}

// quotePath quotes a path only when it holds spaces or unprintable bytes.
func quotePath(s string) string {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || c == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}

// roRW says which way a readonly record went (its IS_NOW_RO flag).
func roRW(ro bool) string {
	if ro {
		return " (ro)"
	}
	return " (rw)"
}

// linuxErrnos names the Linux errno values filesystems report, by their
// Linux numbers (asm-generic/errno*.h), so captures decode the same on
// every system.
var linuxErrnos = map[uint32]string{
	1: "EPERM", 2: "ENOENT", 5: "EIO", 12: "ENOMEM", 14: "EFAULT", 17: "EEXIST",
	20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 27: "EFBIG", 28: "ENOSPC", 30: "EROFS",
	36: "ENAMETOOLONG", 39: "ENOTEMPTY", 40: "ELOOP", 61: "ENODATA", 74: "EBADMSG",
	75: "EOVERFLOW", 116: "ESTALE", 117: "EUCLEAN", 122: "EDQUOT",
}

// ErrnoName names a Linux errno ("EIO"; EUCLEAN is what filesystems
// report as EFSCORRUPTED, EBADMSG as EFSBADCRC), or "errno N".
func ErrnoName(n uint32) string {
	if s, ok := linuxErrnos[n]; ok {
		return s
	}
	return "errno " + strconv.FormatUint(uint64(n), 10)
}

// mountFlagNames lists a mount record's type-info flags by name.
func mountFlagNames(f uint32) []string {
	var out []string
	for _, x := range []struct {
		bit  uint32
		name string
	}{{record.MountFlagInSubtree, "in_subtree"}, {record.MountFlagNowRO, "now_ro"}, {record.MountFlagSubmount, "submount"}} {
		if f&x.bit != 0 {
			out = append(out, x.name)
		}
	}
	return out
}
