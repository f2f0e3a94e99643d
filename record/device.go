package record

import (
	"encoding/binary"
	"fmt"
)

// Block error subtypes (enum block_notification_type of the ver #2 patch
// "block: Add block layer notifications"), mapped from the kernel's
// BLK_STS_* codes. 0 is unused.
const (
	BlockErrorTimeout              uint8 = 1  // BLK_STS_TIMEOUT, ETIMEDOUT
	BlockErrorNoSpace              uint8 = 2  // BLK_STS_NOSPC, ENOSPC
	BlockErrorRecoverableTransport uint8 = 3  // BLK_STS_TRANSPORT, ENOLINK
	BlockErrorCriticalTarget       uint8 = 4  // BLK_STS_TARGET, EREMOTEIO
	BlockErrorCriticalNexus        uint8 = 5  // BLK_STS_NEXUS, EBADE
	BlockErrorCriticalMedium       uint8 = 6  // BLK_STS_MEDIUM, ENODATA
	BlockErrorProtection           uint8 = 7  // BLK_STS_PROTECTION, EILSEQ
	BlockErrorKernelResource       uint8 = 8  // BLK_STS_RESOURCE, ENOMEM
	BlockErrorDeviceResource       uint8 = 9  // BLK_STS_DEV_RESOURCE, EBUSY
	BlockErrorIO                   uint8 = 10 // BLK_STS_IOERR, EIO
)

// Block lifecycle subtypes: watchq's own, for disks and partitions
// appearing, going and changing (from uevents). The seed numbers its error
// subtypes from 1 upward; lifecycle subtypes live at 0x80 and above so the
// two can never collide. Lifecycle records carry the device name after the
// 24-byte block record (see BlockNotification.Name) and set
// BlockFlagPartition in the type-info bits for partitions.
const (
	BlockAdd         uint8 = 0x80 // a disk or partition appeared; Sector = size in sectors
	BlockRemove      uint8 = 0x81 // a disk or partition went away
	BlockChange      uint8 = 0x82 // a "change" uevent without a more specific cause; Sector = size in sectors
	BlockMediaChange uint8 = 0x83 // DISK_MEDIA_CHANGE=1: media inserted or removed; Sector = size in sectors
	BlockResize      uint8 = 0x84 // RESIZE=1: capacity changed; Sector = new size in sectors

	// BlockFlagPartition (WATCH_INFO_FLAG_0) marks a lifecycle record about a
	// partition rather than a whole disk.
	BlockFlagPartition = InfoFlag0
)

var blockSubtypeNames = map[uint8]string{
	BlockErrorTimeout: "timeout", BlockErrorNoSpace: "critical space allocation",
	BlockErrorRecoverableTransport: "recoverable transport", BlockErrorCriticalTarget: "critical target",
	BlockErrorCriticalNexus: "critical nexus", BlockErrorCriticalMedium: "critical medium",
	BlockErrorProtection: "protection", BlockErrorKernelResource: "kernel resource",
	BlockErrorDeviceResource: "device resource", BlockErrorIO: "I/O",
	BlockAdd: "add", BlockRemove: "remove", BlockChange: "change",
	BlockMediaChange: "media-change", BlockResize: "resize",
}

// IsBlockError reports whether s is one of the seed's error subtypes.
func IsBlockError(s uint8) bool { return s >= BlockErrorTimeout && s <= BlockErrorIO }

// BlockSubtypeName names a block subtype as the ver #2 sample does, or
// "unknown".
func BlockSubtypeName(s uint8) string {
	if n, ok := blockSubtypeNames[s]; ok {
		return n
	}
	return "unknown"
}

// BlockRecordSize is sizeof(struct block_notification).
const BlockRecordSize = 24

// BlockMaxNameLen bounds the device name a lifecycle record carries.
const BlockMaxNameLen = 32

// BlockNotification is the ver #2 struct block_notification, optionally
// followed by a device name (lifecycle records only; error records are
// exactly the seed's 24 bytes). Readers written for the seed check len >= 24
// and so read lifecycle records' dev and sector unchanged.
type BlockNotification struct {
	Subtype  uint8
	Tag      Tag    // set by delivery; ignored when posting
	TypeInfo uint16 // e.g. BlockFlagPartition>>16 on lifecycle records
	Dev      uint64 // kernel-internal dev_t: major<<20 | minor
	Sector   uint64 // in 512-byte units
	Name     string // kernel device name ("loop0", "sda1"); at most 32 bytes
}

// KernelDev encodes major:minor as the kernel's internal dev_t
// (include/linux/kdev_t.h MKDEV: major<<20 | minor).
func KernelDev(major, minor uint32) uint64 { return uint64(major)<<20 | uint64(minor&0xfffff) }

// SplitKernelDev decodes a kernel-internal dev_t.
func SplitKernelDev(dev uint64) (major, minor uint32) {
	return uint32(dev >> 20), uint32(dev & 0xfffff)
}

// AppendBinary appends the 24-byte record and the name, if any (truncated
// to 32 bytes).
func (n BlockNotification) AppendBinary(b []byte) ([]byte, error) {
	name := n.Name
	if len(name) > BlockMaxNameLen {
		name = name[:BlockMaxNameLen]
	}
	b, _ = Header{Type: TypeBlock, Subtype: n.Subtype, Info: MakeInfo(BlockRecordSize+len(name), n.Tag, n.TypeInfo)}.AppendBinary(b)
	b = binary.LittleEndian.AppendUint64(b, n.Dev)
	b = binary.LittleEndian.AppendUint64(b, n.Sector)
	return append(b, name...), nil
}

// Block decodes a block record (at least 24 bytes, as the sample requires).
func (r Record) Block() (BlockNotification, error) {
	if r.Type() != TypeBlock {
		return BlockNotification{}, &RecordError{Reason: fmt.Sprintf("%v is not a block record", r)}
	}
	if len(r) < BlockRecordSize {
		return BlockNotification{}, &RecordError{Reason: fmt.Sprintf("block record of %d bytes, want %d", len(r), BlockRecordSize)}
	}
	return BlockNotification{
		Subtype: r.Subtype(), Tag: r.Tag(), TypeInfo: r.Header().TypeInfo(),
		Dev: binary.LittleEndian.Uint64(r[8:]), Sector: binary.LittleEndian.Uint64(r[16:]),
		Name: string(r[BlockRecordSize:]),
	}, nil
}

// USB notification subtypes (enum usb_notification_type, ver #2 patch "usb:
// Add USB subsystem notifications").
const (
	USBDeviceAdd    uint8 = 0 // NOTIFY_USB_DEVICE_ADD, "dev-add"
	USBDeviceRemove uint8 = 1 // NOTIFY_USB_DEVICE_REMOVE, "dev-remove"
	USBDeviceReset  uint8 = 2 // NOTIFY_USB_DEVICE_RESET, "dev-reset"
	USBDeviceError  uint8 = 3 // NOTIFY_USB_DEVICE_ERROR, "dev-error"
)

var usbSubtypeNames = [...]string{"dev-add", "dev-remove", "dev-reset", "dev-error"}

// USBSubtypeName names a USB subtype as the ver #2 sample does, or "unknown".
func USBSubtypeName(s uint8) string {
	if int(s) < len(usbSubtypeNames) {
		return usbSubtypeNames[s]
	}
	return "unknown"
}

// USB record layout: the name starts at offset 17 and the record is not
// padded, so its length is 17+len(name).
const (
	USBNameOffset  = 17 // offsetof(struct usb_notification, name)
	USBMaxNameLen  = 63 // USB_NOTIFICATION_MAX_NAME_LEN
	USBStructSize  = 20 // sizeof(struct usb_notification), tail padding included
	usbErrorOffset = 8
)

// USBNotification is the ver #2 struct usb_notification.
type USBNotification struct {
	Subtype  uint8
	Tag      Tag    // set by delivery; ignored when posting
	Error    uint32 // "currently not used"
	Reserved uint32
	Name     string // kernel device name, e.g. "3-7.7" or "usb3"; at most 63 bytes
}

// AppendBinary appends the 17+len(Name)-byte record. A name longer than 63
// bytes is truncated, as post_usb_notification does.
func (n USBNotification) AppendBinary(b []byte) ([]byte, error) {
	name := n.Name
	if len(name) > USBMaxNameLen {
		name = name[:USBMaxNameLen]
	}
	b, _ = Header{Type: TypeUSB, Subtype: n.Subtype, Info: MakeInfo(USBNameOffset+len(name), n.Tag, 0)}.AppendBinary(b)
	b = binary.LittleEndian.AppendUint32(b, n.Error)
	b = binary.LittleEndian.AppendUint32(b, n.Reserved)
	b = append(b, byte(len(name)))
	return append(b, name...), nil
}

// USB decodes a USB record: name_len must fit the record and be <= 63.
// (The ver #2 sample requires len >= sizeof = 20 and so rejects names
// shorter than 3 bytes; watchq accepts them.)
func (r Record) USB() (USBNotification, error) {
	if r.Type() != TypeUSB {
		return USBNotification{}, &RecordError{Reason: fmt.Sprintf("%v is not a USB record", r)}
	}
	if len(r) < USBNameOffset {
		return USBNotification{}, &RecordError{Reason: fmt.Sprintf("USB record of %d bytes, want >= %d", len(r), USBNameOffset)}
	}
	nl := int(r[16])
	if nl > USBMaxNameLen || USBNameOffset+nl > len(r) {
		return USBNotification{}, &RecordError{Reason: fmt.Sprintf("USB name_len %d in a %d-byte record", nl, len(r))}
	}
	return USBNotification{
		Subtype: r.Subtype(), Tag: r.Tag(),
		Error:    binary.LittleEndian.Uint32(r[usbErrorOffset:]),
		Reserved: binary.LittleEndian.Uint32(r[12:]),
		Name:     string(r[USBNameOffset : USBNameOffset+nl]),
	}, nil
}

// BlockHasSize reports whether a block record of subtype s carries the
// device's size in sectors in its sector field (docs/records.md): every
// lifecycle subtype but remove.
func BlockHasSize(s uint8) bool {
	return s == BlockAdd || s == BlockChange || s == BlockMediaChange || s == BlockResize
}
