package mount

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Mount attributes, as statmount(2) reports them in mnt_attr and
// mount_setattr(2) takes them (MOUNT_ATTR_* in <linux/mount.h>).
const (
	AttrRdonly      uint64 = 0x00000001 // MOUNT_ATTR_RDONLY
	AttrNosuid      uint64 = 0x00000002 // MOUNT_ATTR_NOSUID
	AttrNodev       uint64 = 0x00000004 // MOUNT_ATTR_NODEV
	AttrNoexec      uint64 = 0x00000008 // MOUNT_ATTR_NOEXEC
	AttrNoatime     uint64 = 0x00000010 // MOUNT_ATTR_NOATIME
	AttrStrictatime uint64 = 0x00000020 // MOUNT_ATTR_STRICTATIME (relatime is 0)
	AttrNodiratime  uint64 = 0x00000080 // MOUNT_ATTR_NODIRATIME
	AttrIdmap       uint64 = 0x00100000 // MOUNT_ATTR_IDMAP
	AttrNosymfollow uint64 = 0x00200000 // MOUNT_ATTR_NOSYMFOLLOW
)

// mountInfo is one line of /proc/PID/mountinfo (fs/proc_namespace.c
// show_mountinfo).
type mountInfo struct {
	ID, Parent   uint32 // the 32-bit mount ids
	Major, Minor uint32 // the superblock's device
	MountPoint   string // unescaped, relative to the reader's root
	Attr         uint64 // the mount options as MOUNT_ATTR_* bits
	FSType       string
	SBReadonly   bool // the superblock options say ro
}

// errMountinfo matches every mountinfo parse error.
var errMountinfo = errors.New("malformed mountinfo line")

// parseMountinfo parses a whole mountinfo file into out (reused), in the
// file's order.
func parseMountinfo(b []byte, out []mountInfo) ([]mountInfo, error) {
	out = out[:0]
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) == 0 {
			continue
		}
		mi, err := parseMountinfoLine(string(line))
		if err != nil {
			return out, err
		}
		out = append(out, mi)
	}
	return out, nil
}

// parseMountinfoLine parses "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func parseMountinfoLine(line string) (mountInfo, error) {
	bad := func(why string) (mountInfo, error) {
		return mountInfo{}, fmt.Errorf("%w (%s): %q", errMountinfo, why, line)
	}
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 10 || sep < 0 || len(f) < sep+4 {
		return bad("too few fields")
	}
	var mi mountInfo
	id, err1 := strconv.ParseUint(f[0], 10, 32)
	parent, err2 := strconv.ParseUint(f[1], 10, 32)
	ma, mn, ok := strings.Cut(f[2], ":")
	major, err3 := strconv.ParseUint(ma, 10, 32)
	minor, err4 := strconv.ParseUint(mn, 10, 32)
	if err1 != nil || err2 != nil || !ok || err3 != nil || err4 != nil {
		return bad("ids")
	}
	mp, err := unescapeOctal(f[4])
	if err != nil || !strings.HasPrefix(mp, "/") {
		return bad("mount point")
	}
	mi.ID, mi.Parent, mi.Major, mi.Minor, mi.MountPoint = uint32(id), uint32(parent), uint32(major), uint32(minor), mp
	mi.Attr = AttrStrictatime
	for _, o := range strings.Split(f[5], ",") {
		switch o {
		case "ro":
			mi.Attr |= AttrRdonly
		case "rw":
		case "nosuid":
			mi.Attr |= AttrNosuid
		case "nodev":
			mi.Attr |= AttrNodev
		case "noexec":
			mi.Attr |= AttrNoexec
		case "noatime":
			mi.Attr = mi.Attr&^AttrStrictatime | AttrNoatime
		case "relatime":
			mi.Attr &^= AttrStrictatime
		case "nodiratime":
			mi.Attr |= AttrNodiratime
		case "nosymfollow":
			mi.Attr |= AttrNosymfollow
		case "idmapped":
			mi.Attr |= AttrIdmap
		}
	}
	mi.FSType = f[sep+1]
	for _, o := range strings.Split(f[sep+3], ",") {
		if o == "ro" {
			mi.SBReadonly = true
		}
	}
	return mi, nil
}

// unescapeOctal undoes seq_file's mangle: \ooo for space, tab, newline
// and backslash.
func unescapeOctal(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", errMountinfo
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", errMountinfo
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}
