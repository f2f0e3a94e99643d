// Package printer prints notification records the way the kernel's sample
// program (samples/watch_queue/watch_test.c, with the ver #2 block and USB
// additions) prints them, or as JSON lines for tools.
package printer

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/watchq/watchq/record"
)

// Printer writes records to an io.Writer. It is not safe for concurrent use.
type Printer struct {
	w      io.Writer
	json   bool
	enc    *json.Encoder
	mounts MountResolver
}

// MountResolver returns the mount point of the mount with this id, for
// display; ok is false when the id is unknown.
type MountResolver func(id uint64) (path string, ok bool)

// SetMountResolver makes the printer show mount points beside the mount
// ids of mount records (text: "on=" and "mnt=" after the sample's line;
// JSON: mount_point and aux_mount_point). nil turns it off.
func (p *Printer) SetMountResolver(f MountResolver) { p.mounts = f }

// New returns a printer in the sample's text format, or JSON lines when
// asJSON is set.
func New(w io.Writer, asJSON bool) *Printer {
	p := &Printer{w: w, json: asJSON}
	if asJSON {
		p.enc = json.NewEncoder(w)
	}
	return p
}

// Read prints the result of one read: "read() = N" and then each record
// (text), or one JSON object per record. A malformed record is reported
// as the sample reports it ("Bad message length") and ends the buffer; the
// returned error says where.
func (p *Printer) Read(buf []byte) error {
	if !p.json {
		fmt.Fprintf(p.w, "read() = %d\n", len(buf))
	}
	off := 0
	for r, err := range record.Records(buf) {
		if err != nil {
			if !p.json {
				fmt.Fprintf(p.w, "Bad message at %#x: %v\n", off, err)
			}
			return err
		}
		p.record(off, r)
		off += len(r)
	}
	return nil
}

func (p *Printer) record(off int, r record.Record) {
	if p.json {
		o := JSON(r)
		if p.mounts != nil && r.Type() == record.TypeMount {
			if path, ok := p.mounts(o.MountID); ok {
				o.MountPoint = path
			}
			if path, ok := p.mounts(o.AuxMountID); ok && o.AuxMountID != 0 {
				o.AuxMountPoint = path
			}
		}
		_ = p.enc.Encode(o)
		return
	}
	h := r.Header()
	fmt.Fprintf(p.w, "NOTIFY[%03x]: ty=%06x sy=%02x i=%08x\n", off, uint32(h.Type), h.Subtype, h.Info)
	line := Line(r)
	if m, err := r.Mount(); err == nil && p.mounts != nil {
		if path, ok := p.mounts(m.TriggeredOn); ok {
			line += " on=" + quotePath(path)
		}
		if path, ok := p.mounts(m.Aux); ok && m.Aux != 0 {
			line += " mnt=" + quotePath(path)
		}
	}
	fmt.Fprintln(p.w, line)
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

// Line is the sample's description line for one record: "KEY … change=…",
// "BLOCK …", "USB …", "MOUNT … change=… aux=…", "SUPER … change=…" (with
// "e=ERRNO[NAME] c=COOKIE" for superblock errors, and "(ro)" or "(rw)" for
// readonly records), "-- LOSS --",
// "REMOVAL of watchpoint …".
func Line(r record.Record) string {
	h := r.Header()
	switch h.Type {
	case record.TypeMeta:
		switch h.Subtype {
		case record.MetaRemoval:
			return fmt.Sprintf("REMOVAL of watchpoint %08x", h.Info&record.InfoID>>record.InfoIDShift)
		case record.MetaLoss:
			if l, _ := r.Loss(); l.Count > 0 {
				return fmt.Sprintf("-- LOSS -- (%d records)", l.Count)
			}
			return "-- LOSS --"
		}
		return "other meta record"
	case record.TypeKey:
		k, err := r.Key()
		if err != nil {
			return "Incorrect key message length"
		}
		return fmt.Sprintf("KEY %08x change=%d[%s] aux=%d", k.KeyID, k.Subtype, record.KeySubtypeName(k.Subtype), k.Aux)
	case record.TypeBlock:
		b, err := r.Block()
		if err != nil {
			return "Incorrect block message length"
		}
		s := fmt.Sprintf("BLOCK %08x e=%d[%s] s=%x", b.Dev, b.Subtype, record.BlockSubtypeName(b.Subtype), b.Sector)
		if b.Name != "" {
			s += " " + b.Name
		}
		return s
	case record.TypeUSB:
		u, err := r.USB()
		if err != nil {
			return "Incorrect USB message length"
		}
		return fmt.Sprintf("USB %s %s e=%x r=%x", u.Name, record.USBSubtypeName(u.Subtype), u.Error, u.Reserved)
	case record.TypeMount:
		m, err := r.Mount()
		if err != nil {
			return "Incorrect mount message length"
		}
		s := fmt.Sprintf("MOUNT %08x change=%d[%s] aux=%x", m.TriggeredOn, m.Subtype, record.MountSubtypeName(m.Subtype), m.Aux)
		if m.Subtype == record.MountReadonly {
			s += roRW(m.Flags&record.MountFlagNowRO != 0)
		}
		return s
	case record.TypeSuperblock:
		sb, err := r.Superblock()
		if err != nil {
			return "Incorrect superblock message length"
		}
		s := fmt.Sprintf("SUPER %08x change=%d[%s]", sb.SBID, sb.Subtype, record.SuperblockSubtypeName(sb.Subtype))
		if sb.Subtype == record.SuperblockError {
			s += fmt.Sprintf(" e=%d[%s] c=%d", sb.ErrorNumber, ErrnoName(sb.ErrorNumber), sb.ErrorCookie)
		}
		if sb.Subtype == record.SuperblockReadonly {
			s += roRW(sb.Flags&record.SuperblockFlagNowRO != 0)
		}
		return s
	}
	return "other type"
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

// Object is the JSON form of a record.
type Object struct {
	Type     string          `json:"type"`
	TypeNum  uint32          `json:"ty"`
	Subtype  uint8           `json:"sy"`
	Info     uint32          `json:"info"`
	Tag      record.Tag      `json:"tag"`
	Len      int             `json:"len"`
	Event    string          `json:"event,omitempty"`
	KeyID    uint32          `json:"key_id,omitempty"`
	Aux      uint32          `json:"aux,omitempty"`
	Dev      string          `json:"dev,omitempty"`
	Sector   uint64          `json:"sector,omitempty"`
	Name     string          `json:"name,omitempty"`
	ObjectID record.ObjectID `json:"id,omitempty"`
	Lost     uint16          `json:"lost,omitempty"`

	// Mount records: the mount the change is accounted to, the mount
	// added, removed or moved, their mount points when the printer has a
	// MountResolver, and the flags (in_subtree, now_ro, submount).
	MountID       uint64   `json:"mount_id,omitempty"`
	AuxMountID    uint64   `json:"aux_mount_id,omitempty"`
	MountPoint    string   `json:"mount_point,omitempty"`
	AuxMountPoint string   `json:"aux_mount_point,omitempty"`
	Flags         []string `json:"flags,omitempty"`
	// Superblock records: the superblock (its device, also in dev as
	// major:minor) and, for errors, the errno, its name and the cookie.
	SBID   uint64 `json:"sb_id,omitempty"`
	Errno  uint32 `json:"errno,omitempty"`
	Error  string `json:"error,omitempty"`
	Cookie uint32 `json:"cookie,omitempty"`

	Raw []byte `json:"raw,omitempty"`
}

// JSON converts a record to its JSON form.
func JSON(r record.Record) Object {
	h := r.Header()
	o := Object{Type: h.Type.String(), TypeNum: uint32(h.Type), Subtype: h.Subtype, Info: h.Info, Tag: h.Tag(), Len: len(r)}
	switch h.Type {
	case record.TypeMeta:
		if m, err := r.Removal(); err == nil {
			o.Event, o.ObjectID = "removal", m.ID
		} else if l, err := r.Loss(); err == nil {
			o.Event, o.Lost = "loss", l.Count
		}
	case record.TypeKey:
		if k, err := r.Key(); err == nil {
			o.Event, o.KeyID, o.Aux = record.KeySubtypeName(k.Subtype), k.KeyID, k.Aux
		}
	case record.TypeBlock:
		if b, err := r.Block(); err == nil {
			ma, mi := record.SplitKernelDev(b.Dev)
			o.Event, o.Dev, o.Sector, o.Name = record.BlockSubtypeName(b.Subtype), fmt.Sprintf("%d:%d", ma, mi), b.Sector, b.Name
		}
	case record.TypeUSB:
		if u, err := r.USB(); err == nil {
			o.Event, o.Name = record.USBSubtypeName(u.Subtype), u.Name
		}
	case record.TypeMount:
		if m, err := r.Mount(); err == nil {
			o.Event, o.MountID, o.AuxMountID, o.Flags = record.MountSubtypeName(m.Subtype), m.TriggeredOn, m.Aux, mountFlagNames(m.Flags)
		}
	case record.TypeSuperblock:
		if sb, err := r.Superblock(); err == nil {
			ma, mi := record.SplitKernelDev(sb.SBID)
			o.Event, o.SBID, o.Dev = record.SuperblockSubtypeName(sb.Subtype), sb.SBID, fmt.Sprintf("%d:%d", ma, mi)
			if sb.Flags&record.SuperblockFlagNowRO != 0 {
				o.Flags = []string{"now_ro"}
			}
			if sb.Subtype == record.SuperblockError {
				o.Errno, o.Error, o.Cookie = sb.ErrorNumber, ErrnoName(sb.ErrorNumber), sb.ErrorCookie
			}
		}
	default:
		o.Raw = append([]byte(nil), r[record.HeaderSize:]...)
	}
	return o
}
