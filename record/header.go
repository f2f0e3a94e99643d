package record

import (
	"encoding/binary"
	"fmt"
)

// Type is a record's source type: the 24-bit type field of struct
// watch_notification (include/uapi/linux/watch_queue.h).
type Type uint32

// Record types. TypeMeta and TypeKey are mainline's enum
// watch_notification_type; TypeBlock and TypeUSB are the numbers of
// David Howells' ver #2 patch set, which never reached mainline.
const (
	TypeMeta  Type = 0 // WATCH_TYPE_META
	TypeKey   Type = 1 // WATCH_TYPE_KEY_NOTIFY
	TypeBlock Type = 2 // WATCH_TYPE_BLOCK_NOTIFY (ver #2)
	TypeUSB   Type = 3 // WATCH_TYPE_USB_NOTIFY (ver #2)

	// TypeNR is the number of kernel-assigned types watchq knows: 4 is
	// WATCH_TYPE__NR of the seed, ver #2 (meta 0 and key 1 as in mainline,
	// block 2 and USB 3 its own). Mainline's WATCH_TYPE__NR is 2 (meta and
	// key only), and mainline never reserved 2 and 3: later unmerged
	// series used them for mount and superblock records. Filter entries
	// for types in [TypeNR, TypeUserFirst) are dropped, as the kernel
	// drops types >= WATCH_TYPE__NR.
	TypeNR Type = 4

	// TypeUserFirst..TypeUserLast is the range watchq reserves for
	// userspace publishers. The kernel numbers its types upward from 0; the
	// top half of the 24-bit space can never collide with them.
	TypeUserFirst Type = 0x800000
	// TypeUserLast is the last publisher type.
	TypeUserLast Type = 0xffffff

	// TypeMax is the largest value the 24-bit type field holds.
	TypeMax Type = 0xffffff
)

// IsPublisher reports whether t is in the range watchq reserves for
// userspace publishers, TypeUserFirst..TypeUserLast.
func (t Type) IsPublisher() bool { return t >= TypeUserFirst && t <= TypeUserLast }

// Known reports whether records of type t can be filtered: a kernel type
// below TypeNR or a userspace publisher type.
func (t Type) Known() bool { return t < TypeNR || t.IsPublisher() }

// String names the type as the kernel headers do.
func (t Type) String() string {
	switch t {
	case TypeMeta:
		return "meta"
	case TypeKey:
		return "key"
	case TypeBlock:
		return "block"
	case TypeUSB:
		return "usb"
	}
	if t.IsPublisher() {
		return fmt.Sprintf("user:%06x", uint32(t))
	}
	return fmt.Sprintf("type:%06x", uint32(t))
}

// Meta subtypes (enum watch_meta_notification_subtype).
const (
	MetaRemoval uint8 = 0 // WATCH_META_REMOVAL_NOTIFICATION
	MetaLoss    uint8 = 1 // WATCH_META_LOSS_NOTIFICATION
)

// The info word's fields (WATCH_INFO_* in <linux/watch_queue.h>).
const (
	InfoLength        uint32 = 0x0000007f // WATCH_INFO_LENGTH: record length in bytes
	InfoLengthShift          = 0
	InfoID            uint32 = 0x0000ff00 // WATCH_INFO_ID: the watch's tag
	InfoIDShift              = 8
	InfoTypeInfo      uint32 = 0xffff0000 // WATCH_INFO_TYPE_INFO
	InfoTypeInfoShift        = 16
	InfoFlag0         uint32 = 0x00010000 // WATCH_INFO_FLAG_0; FLAG_n is InfoFlag0<<n
)

// Sizes of the kernel's structures, in bytes.
const (
	HeaderSize      = 8   // sizeof(struct watch_notification)
	MaxRecordSize   = 127 // largest length the 7-bit length field holds
	NoteSize        = 128 // WATCH_QUEUE_NOTE_SIZE: one slot in a queue
	LossSize        = 8   // the loss record read() makes up
	RemovalSize     = 16  // sizeof(struct watch_notification_removal)
	RemovalSizeNoID = 8   // a removal record for object id 0

	// MaxNotes is the largest queue size IOC_WATCH_QUEUE_SET_SIZE accepts
	// (kernel/watch_queue.c:watch_queue_set_size's hard limit).
	MaxNotes = 512
	// NotesPerPage is WATCH_QUEUE_NOTES_PER_PAGE with 4 KiB pages: the
	// kernel allocates notes a page at a time, so a queue's capacity is
	// the requested size rounded up to a multiple of 32.
	NotesPerPage = 4096 / NoteSize
)

// Header is struct watch_notification: the 8 bytes in front of every record.
type Header struct {
	Type    Type   // 24 bits
	Subtype uint8  // filterable, 0..255
	Info    uint32 // length | tag<<8 | type-info<<16
}

// Len is the record's whole length in bytes, header included.
func (h Header) Len() int { return int(h.Info & InfoLength) }

// Tag is the watch tag (WATCH_INFO_ID) the record was delivered under.
func (h Header) Tag() Tag { return Tag(h.Info >> InfoIDShift) }

// TypeInfo is the type-specific upper half of info.
func (h Header) TypeInfo() uint16 { return uint16(h.Info >> InfoTypeInfoShift) }

// MakeInfo builds an info word from its fields.
func MakeInfo(length int, tag Tag, typeInfo uint16) uint32 {
	return uint32(length)&InfoLength | uint32(tag)<<InfoIDShift | uint32(typeInfo)<<InfoTypeInfoShift
}

// word0 packs type:24|subtype:8 as GCC lays out the bit-fields on a
// little-endian machine: type in the low 24 bits, subtype in the top byte.
func (h Header) word0() uint32 { return uint32(h.Type)&uint32(TypeMax) | uint32(h.Subtype)<<24 }

// Put writes the header into b[:8], which must be at least 8 bytes.
func (h Header) Put(b []byte) {
	_ = b[7]
	binary.LittleEndian.PutUint32(b[0:], h.word0())
	binary.LittleEndian.PutUint32(b[4:], h.Info)
}

// AppendBinary appends the 8 header bytes to b.
func (h Header) AppendBinary(b []byte) ([]byte, error) {
	b = binary.LittleEndian.AppendUint32(b, h.word0())
	return binary.LittleEndian.AppendUint32(b, h.Info), nil
}

// HeaderAt decodes the header at b[0:8] without checks; b must hold 8
// bytes. Use it only on bytes already checked (a Record, a queue's note);
// ParseHeader checks.
func HeaderAt(b []byte) Header {
	w := binary.LittleEndian.Uint32(b)
	return Header{Type: Type(w & uint32(TypeMax)), Subtype: uint8(w >> 24), Info: binary.LittleEndian.Uint32(b[4:])}
}

// tagOffset is the byte of the info word that holds the tag
// (WATCH_INFO_ID, bits 8..15, little-endian).
const tagOffset = 5

// SetTag stamps t into the info word of the record at the start of b, as
// delivery under a watch does (n->info |= watch->info_id). b must hold a
// header.
func SetTag(b []byte, t Tag) { b[tagOffset] = byte(t) }

// IsWhole reports whether b is exactly one record: 8..127 bytes with the
// length field equal to len(b). It is the check a poster's bytes pass
// before delivery.
func IsWhole(b []byte) bool {
	return len(b) >= HeaderSize && len(b) <= MaxRecordSize && int(b[4])&int(InfoLength) == len(b)
}

// ParseHeader decodes and checks the header of the record at the start of b:
// b must hold 8 bytes, and the length field must satisfy
// 8 <= len <= len(b) (and len <= 127, which the 7-bit field guarantees).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, &RecordError{Offset: 0, Reason: fmt.Sprintf("short header: %d bytes", len(b))}
	}
	h := HeaderAt(b)
	if n := h.Len(); n < HeaderSize || n > len(b) {
		return h, &RecordError{Offset: 0, Reason: fmt.Sprintf("bad length %d with %d bytes left", n, len(b))}
	}
	return h, nil
}
