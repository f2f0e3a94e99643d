package printer

import (
	"bytes"
	"fmt"
	"os"

	"github.com/watchq/watchq/record"
)

// Version is the JSON schema's version, the "v" of every object. It
// changes only when a field changes meaning or goes away; new fields may
// appear within a version.
const Version = 1

// Object is the JSON form of a record, schema Version (docs/cli.md). Every
// field that applies to the record's type is present, zeros included;
// fields of other types are absent.
type Object struct {
	V       int    `json:"v"`     // schema version
	TS      string `json:"ts"`    // RFC 3339 time the record was printed, UTC
	Type    string `json:"type"`  // "meta", "key", "block", "usb", "user:800001"…
	TypeNum uint32 `json:"ty"`    // the type number
	Event   string `json:"event"` // the subtype as filters name it, or "" for none
	Subtype uint8  `json:"sy"`    // the subtype number
	Info    uint32 `json:"info"`  // the info word
	Tag     uint8  `json:"tag"`   // the watch tag
	Len     int    `json:"len"`   // the record's length in bytes

	// key records
	KeyID *uint32 `json:"key_id,omitempty"` // the key that changed
	Aux   *uint32 `json:"aux,omitempty"`    // the linked key, or a negated error

	// block records
	Dev       string  `json:"dev,omitempty"`       // "major:minor"
	Major     *uint32 `json:"major,omitempty"`     //
	Minor     *uint32 `json:"minor,omitempty"`     //
	Sector    *uint64 `json:"sector,omitempty"`    // error records: the failed sector
	Size      *uint64 `json:"size,omitempty"`      // lifecycle records but remove: size in 512-byte sectors
	Partition *bool   `json:"partition,omitempty"` // lifecycle records: a partition, not a disk

	// block and USB records
	Name *string `json:"name,omitempty"` // kernel device name ("" when unknown)

	// USB records
	Error    *uint32 `json:"error,omitempty"`
	Reserved *uint32 `json:"reserved,omitempty"`

	// mount records: the mount the change is accounted to, the mount
	// added, removed or moved (0: none), their mount points when known,
	// and the flags (in_subtree, now_ro, submount)
	MountID       *uint64  `json:"mount_id,omitempty"`
	AuxMountID    *uint64  `json:"aux_mount_id,omitempty"`
	MountPoint    *string  `json:"mount_point,omitempty"`
	AuxMountPoint *string  `json:"aux_mount_point,omitempty"`
	Flags         []string `json:"flags,omitempty"`

	// superblock records: the superblock (its device, also in dev) and,
	// for errors, the errno, its name and the cookie
	SBID   *uint64 `json:"sb_id,omitempty"`
	Errno  *uint32 `json:"errno,omitempty"`
	ErrStr *string `json:"error_name,omitempty"`
	Cookie *uint32 `json:"cookie,omitempty"`

	// meta records
	ID   *uint64 `json:"id,omitempty"`   // removal: the object id (0 for the device list)
	Lost *uint16 `json:"lost,omitempty"` // loss: records lost (65535: at least that many)

	// Data is a publisher record's payload, hex; Raw the whole record, hex,
	// when asked for (Options.Raw).
	Data string `json:"data,omitempty"`
	Raw  string `json:"raw,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// JSON converts a record to its JSON form, resolving block device names
// with devices (nil: names the record carries only). TS is left for the
// caller.
func JSON(r record.Record, devices DeviceNamer) Object {
	h := r.Header()
	o := Object{V: Version, Type: h.Type.String(), TypeNum: uint32(h.Type), Event: record.EventName(h.Type, h.Subtype),
		Subtype: h.Subtype, Info: h.Info, Tag: uint8(h.Tag()), Len: len(r)}
	switch h.Type {
	case record.TypeMeta:
		if m, err := r.Removal(); err == nil {
			o.ID = ptr(uint64(m.ID))
		} else if l, err := r.Loss(); err == nil {
			o.Lost = ptr(l.Count)
		}
	case record.TypeKey:
		if k, err := r.Key(); err == nil {
			o.KeyID, o.Aux = ptr(k.KeyID), ptr(k.Aux)
		}
	case record.TypeBlock:
		if b, err := r.Block(); err == nil {
			ma, mi := record.SplitKernelDev(b.Dev)
			o.Dev, o.Major, o.Minor = fmt.Sprintf("%d:%d", ma, mi), ptr(ma), ptr(mi)
			name := b.Name
			if name == "" && devices != nil {
				name = devices.DeviceName(ma, mi)
			}
			o.Name = ptr(name)
			if record.IsBlockError(b.Subtype) {
				o.Sector = ptr(b.Sector)
			} else {
				o.Partition = ptr(b.IsPartition())
				if record.BlockHasSize(b.Subtype) {
					o.Size = ptr(b.Sector)
				}
			}
		}
	case record.TypeUSB:
		if u, err := r.USB(); err == nil {
			o.Name, o.Error, o.Reserved = ptr(u.Name), ptr(u.Error), ptr(u.Reserved)
		}
	case record.TypeMount:
		if m, err := r.Mount(); err == nil {
			o.MountID, o.AuxMountID, o.Flags = ptr(m.TriggeredOn), ptr(m.Aux), mountFlagNames(m.Flags)
		}
	case record.TypeSuperblock:
		if sb, err := r.Superblock(); err == nil {
			ma, mi := record.SplitKernelDev(sb.SBID)
			o.SBID, o.Dev, o.Major, o.Minor = ptr(sb.SBID), fmt.Sprintf("%d:%d", ma, mi), ptr(ma), ptr(mi)
			if sb.Flags&record.SuperblockFlagNowRO != 0 {
				o.Flags = []string{"now_ro"}
			}
			if sb.Subtype == record.SuperblockError {
				o.Errno, o.ErrStr, o.Cookie = ptr(sb.ErrorNumber), ptr(ErrnoName(sb.ErrorNumber)), ptr(sb.ErrorCookie)
			}
		}
	default:
		o.Data = fmt.Sprintf("%x", []byte(r[record.HeaderSize:]))
	}
	return o
}

// DeviceNamer names a block device by its numbers, or returns "".
type DeviceNamer interface {
	DeviceName(major, minor uint32) string
}

// noDevices names nothing.
type noDevices struct{}

func (noDevices) DeviceName(uint32, uint32) string { return "" }

// NoDeviceNames names no device: for records from elsewhere or earlier
// (a decoded capture), where this machine's sysfs says nothing.
var NoDeviceNames DeviceNamer = noDevices{}

// sysfsDevices reads /sys/dev/block/MAJOR:MINOR/uevent's DEVNAME.
type sysfsDevices struct{}

// DevicesFromSysfs names block devices from sysfs, where they exist now.
var DevicesFromSysfs DeviceNamer = sysfsDevices{}

func (sysfsDevices) DeviceName(major, minor uint32) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
	if err != nil {
		return ""
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("DEVNAME=")); ok {
			return string(v)
		}
	}
	return ""
}
