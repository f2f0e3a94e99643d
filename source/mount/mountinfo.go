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

// rawMountinfo is one mountinfo line split into the fields the source
// uses, aliasing the file's bytes (no allocation): what the attribute
// scan of every change needs.
type rawMountinfo struct {
	id, parent, major, minor uint32
	mp, opts, fstype, sopts  []byte // the mount point still escaped
}

// attr decodes the mount options into MOUNT_ATTR_* bits.
func (r *rawMountinfo) attr() uint64 {
	a := AttrStrictatime
	for o := r.opts; len(o) > 0; {
		var w []byte
		if i := bytes.IndexByte(o, ','); i >= 0 {
			w, o = o[:i], o[i+1:]
		} else {
			w, o = o, nil
		}
		switch string(w) {
		case "ro":
			a |= AttrRdonly
		case "nosuid":
			a |= AttrNosuid
		case "nodev":
			a |= AttrNodev
		case "noexec":
			a |= AttrNoexec
		case "noatime":
			a = a&^AttrStrictatime | AttrNoatime
		case "relatime":
			a &^= AttrStrictatime
		case "nodiratime":
			a |= AttrNodiratime
		case "nosymfollow":
			a |= AttrNosymfollow
		case "idmapped":
			a |= AttrIdmap
		}
	}
	return a
}

// sbReadonly reports whether the superblock options say ro.
func (r *rawMountinfo) sbReadonly() bool {
	for o := r.sopts; len(o) > 0; {
		var w []byte
		if i := bytes.IndexByte(o, ','); i >= 0 {
			w, o = o[:i], o[i+1:]
		} else {
			w, o = o, nil
		}
		if string(w) == "ro" {
			return true
		}
	}
	return false
}

// mountPointIs reports whether the mount point is p, without allocating
// when it needs no unescaping.
func (r *rawMountinfo) mountPointIs(p string) bool {
	if bytes.IndexByte(r.mp, '\\') < 0 {
		return string(r.mp) == p
	}
	u, err := unescapeOctal(string(r.mp))
	return err == nil && u == p
}

// field cuts the next space-separated field off b.
func field(b []byte) (f, rest []byte) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// atou parses a decimal uint32.
func atou(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return uint32(v), v <= 0xffffffff
}

// scanMountinfoLine splits "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func scanMountinfoLine(line []byte, r *rawMountinfo) error {
	bad := func(why string) error { return fmt.Errorf("%w (%s): %q", errMountinfo, why, line) }
	var f [6][]byte
	rest := line
	for i := range f {
		if rest == nil {
			return bad("too few fields")
		}
		f[i], rest = field(rest)
	}
	var ok1, ok2, ok3, ok4 bool
	r.id, ok1 = atou(f[0])
	r.parent, ok2 = atou(f[1])
	ma, mn, okc := bytes.Cut(f[2], []byte{':'})
	r.major, ok3 = atou(ma)
	r.minor, ok4 = atou(mn)
	if !ok1 || !ok2 || !okc || !ok3 || !ok4 {
		return bad("ids")
	}
	if len(f[4]) == 0 || f[4][0] != '/' {
		return bad("mount point")
	}
	r.mp, r.opts = f[4], f[5]
	for { // optional fields up to "-"
		var w []byte
		if rest == nil {
			return bad("no separator")
		}
		w, rest = field(rest)
		if string(w) == "-" {
			break
		}
	}
	var src []byte
	r.fstype, rest = field(rest)
	src, rest = field(rest)
	if rest == nil || src == nil {
		return bad("too few fields")
	}
	r.sopts, _ = field(rest)
	return nil
}

// scanMountinfo calls f for each line of a whole mountinfo file, in order.
func scanMountinfo(b []byte, f func(*rawMountinfo)) error {
	var r rawMountinfo
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
		if err := scanMountinfoLine(line, &r); err != nil {
			return err
		}
		f(&r)
	}
	return nil
}

// parseMountinfo parses a whole mountinfo file into out (reused), in the
// file's order.
func parseMountinfo(b []byte, out []mountInfo) ([]mountInfo, error) {
	out = out[:0]
	var bad error
	err := scanMountinfo(b, func(r *rawMountinfo) {
		mp, err := unescapeOctal(string(r.mp))
		if err != nil {
			if bad == nil {
				bad = fmt.Errorf("%w (mount point): %q", errMountinfo, r.mp)
			}
			return
		}
		out = append(out, mountInfo{
			ID: r.id, Parent: r.parent, Major: r.major, Minor: r.minor, MountPoint: mp,
			Attr: r.attr(), FSType: string(r.fstype), SBReadonly: r.sbReadonly(),
		})
	})
	if err == nil {
		err = bad
	}
	return out, err
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
