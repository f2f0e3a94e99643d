package kernel

import (
	"encoding/binary"
	"fmt"
)

// Constants from include/uapi/linux/watch_queue.h and
// include/uapi/linux/keyctl.h that golang.org/x/sys/unix does not define.
const (
	// IocWatchQueueSetSize is IOC_WATCH_QUEUE_SET_SIZE, _IO('W', 0x60):
	// the argument is the number of notes, by value.
	IocWatchQueueSetSize = 0x5760
	// IocWatchQueueSetFilter is IOC_WATCH_QUEUE_SET_FILTER, _IO('W', 0x61):
	// the argument points to a struct watch_notification_filter.
	IocWatchQueueSetFilter = 0x5761

	// MinNotes and MaxNotes bound SetSize (kernel/watch_queue.c:
	// watch_queue_set_size).
	MinNotes = 1
	MaxNotes = 512

	// NoteSize is WATCH_QUEUE_NOTE_SIZE, the slot size of one record.
	NoteSize = 128
	// MaxRecordSize is the largest record length (WATCH_INFO_LENGTH).
	MaxRecordSize = 127

	// MaxFilters is the largest nr_filters the kernel accepts.
	MaxFilters = 16
	// FilterHeaderSize is sizeof(struct watch_notification_filter).
	FilterHeaderSize = 8
	// FilterEntrySize is sizeof(struct watch_notification_type_filter).
	FilterEntrySize = 44

	// RemoveWatch is the tag argument of KEYCTL_WATCH_KEY that removes a
	// watch.
	RemoveWatch = -1
	// MaxTag is the largest watch tag (WATCH_INFO_ID >> 8).
	MaxTag = 0xff

	// capsNotifications is KEYCTL_CAPS1_NOTIFICATIONS: bit 2 of byte 1
	// of the KEYCTL_CAPABILITIES result.
	capsNotifications = 0x04
	// typeKeyNotify is WATCH_TYPE_KEY_NOTIFY.
	typeKeyNotify = 1
)

// FilterEntry is struct watch_notification_type_filter: records of Type
// whose subtype bit is set in Subtypes and whose info word satisfies
// info&InfoMask == InfoFilter pass.
type FilterEntry struct {
	Type       uint32    // the record type (24 bits)
	InfoFilter uint32    // required info bits, within InfoMask
	InfoMask   uint32    // info bits compared; must not cover WATCH_INFO_LENGTH
	Subtypes   [8]uint32 // 256-bit subtype bitmap; bit n of word n/32 is subtype n
}

// Filter is struct watch_notification_filter: a list of up to 16 entries;
// a record passes if any entry accepts it. Meta records (removal, loss) are
// never filtered.
type Filter []FilterEntry

// KeyFilter returns a filter passing only key records of the given subtypes,
// or every key record if none are given (as samples/watch_queue/watch_test.c
// does).
func KeyFilter(subtypes ...uint8) Filter {
	e := FilterEntry{Type: typeKeyNotify}
	if len(subtypes) == 0 {
		for i := range e.Subtypes {
			e.Subtypes[i] = ^uint32(0)
		}
	}
	for _, s := range subtypes {
		e.Subtypes[s/32] |= 1 << (s % 32)
	}
	return Filter{e}
}

// MarshalBinary encodes the filter as the kernel's struct, little-endian
// (the host order on every architecture this package supports). It applies
// the checks of kernel/watch_queue.c:watch_queue_set_filter that can be made
// without the kernel.
func (f Filter) MarshalBinary() ([]byte, error) {
	if len(f) == 0 || len(f) > MaxFilters {
		return nil, fmt.Errorf("kernel: filter has %d entries, want 1..%d", len(f), MaxFilters)
	}
	b := make([]byte, 0, FilterHeaderSize+len(f)*FilterEntrySize)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for i, e := range f {
		if e.InfoFilter&^e.InfoMask != 0 || e.InfoMask&MaxRecordSize != 0 {
			return nil, fmt.Errorf("kernel: filter entry %d: bad info filter %#x / mask %#x", i, e.InfoFilter, e.InfoMask)
		}
		b = binary.LittleEndian.AppendUint32(b, e.Type)
		b = binary.LittleEndian.AppendUint32(b, e.InfoFilter)
		b = binary.LittleEndian.AppendUint32(b, e.InfoMask)
		for _, w := range e.Subtypes {
			b = binary.LittleEndian.AppendUint32(b, w)
		}
	}
	return b, nil
}

// RawFilter is an already encoded struct watch_notification_filter, such as
// watchq.Filter.MarshalBinary returns.
type RawFilter []byte

// MarshalBinary returns the bytes unchanged.
func (r RawFilter) MarshalBinary() ([]byte, error) { return r, nil }

// checkFilterBytes makes sure the kernel will not read past b: it copies the
// 8-byte header, then nr_filters*44 bytes when nr_filters is in 1..16.
func checkFilterBytes(b []byte) error {
	if len(b) < FilterHeaderSize {
		return fmt.Errorf("kernel: filter of %d bytes is shorter than its header", len(b))
	}
	nr := binary.LittleEndian.Uint32(b)
	if nr >= 1 && nr <= MaxFilters && len(b) < FilterHeaderSize+int(nr)*FilterEntrySize {
		return fmt.Errorf("kernel: filter of %d bytes is too short for %d entries", len(b), nr)
	}
	return nil
}
