package record

import (
	"encoding/binary"
	"fmt"
)

// Filter binary layout (struct watch_notification_filter and struct
// watch_notification_type_filter, <linux/watch_queue.h>).
const (
	FilterHeaderSize = 8  // nr_filters, __reserved
	FilterEntrySize  = 44 // type, info_filter, info_mask, subtype_filter[8]
	MaxFilters       = 16 // kernel/watch_queue.c:watch_queue_set_filter's limit
)

// FilterEntry is struct watch_notification_type_filter: records of Type
// whose subtype bit is set in Subtypes and whose info satisfies
// info&InfoMask == InfoFilter pass.
type FilterEntry struct {
	Type       Type
	InfoFilter uint32
	InfoMask   uint32
	Subtypes   [8]uint32 // bit n%32 of word n/32 selects subtype n; all 256 are matchable
}

// AllSubtypes is a subtype set with every subtype selected.
var AllSubtypes = [8]uint32{^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0)}

// SubtypeSet builds a subtype bitmap from subtypes.
func SubtypeSet(subtypes ...uint8) [8]uint32 {
	var s [8]uint32
	for _, st := range subtypes {
		s[st/32] |= 1 << (st % 32)
	}
	return s
}

// Filter is a validated queue filter. With a filter installed a record
// passes only if some entry accepts it ("if there is a filter, the default
// is to reject"). The zero Filter rejects everything but meta records.
// A Filter is immutable once built.
type Filter struct {
	// kept are the entries with known types, in input order
	// (watch_queue_set_filter drops the rest).
	kept []FilterEntry
	// given are all the entries as given, for MarshalBinary.
	given []FilterEntry
}

// NewFilter validates entries exactly as watch_queue_set_filter does:
// 1..16 entries; InfoFilter must be a subset of InfoMask; InfoMask may not
// cover the length bits; all EINVAL. Entries whose type is not known (see
// Type.Known) are kept for MarshalBinary but never match, as the kernel
// silently drops them.
func NewFilter(entries ...FilterEntry) (*Filter, error) {
	if len(entries) == 0 || len(entries) > MaxFilters {
		return nil, errInval("filter has %d entries, want 1..%d", len(entries), MaxFilters)
	}
	f := &Filter{given: append([]FilterEntry(nil), entries...)}
	for i, e := range entries {
		if e.InfoFilter&^e.InfoMask != 0 {
			return nil, errInval("filter entry %d: info_filter %#x has bits outside info_mask %#x", i, e.InfoFilter, e.InfoMask)
		}
		if e.InfoMask&InfoLength != 0 {
			return nil, errInval("filter entry %d: info_mask %#x covers the length bits", i, e.InfoMask)
		}
		if e.Type.Known() {
			f.kept = append(f.kept, e)
		}
	}
	return f, nil
}

// ParseFilter decodes and validates the kernel's binary struct
// watch_notification_filter, with watch_queue_set_filter's checks: a short
// buffer, nr_filters outside 1..16 or a non-zero __reserved is EINVAL
// (checked before anything is allocated), then each entry as in NewFilter.
// Trailing bytes after the last entry are ignored, as the kernel copies
// only nr_filters entries.
func ParseFilter(b []byte) (*Filter, error) {
	if len(b) < FilterHeaderSize {
		return nil, errInval("filter is %d bytes, shorter than its %d-byte header", len(b), FilterHeaderSize)
	}
	nr := binary.LittleEndian.Uint32(b[0:])
	if reserved := binary.LittleEndian.Uint32(b[4:]); reserved != 0 {
		return nil, errInval("filter __reserved is %#x, want 0", reserved)
	}
	if nr == 0 || nr > MaxFilters {
		return nil, errInval("filter has %d entries, want 1..%d", nr, MaxFilters)
	}
	need := FilterHeaderSize + int(nr)*FilterEntrySize
	if len(b) < need {
		return nil, errInval("filter with %d entries needs %d bytes, have %d", nr, need, len(b))
	}
	entries := make([]FilterEntry, nr)
	for i := range entries {
		p := b[FilterHeaderSize+i*FilterEntrySize:]
		e := &entries[i]
		e.Type = Type(binary.LittleEndian.Uint32(p[0:]))
		e.InfoFilter = binary.LittleEndian.Uint32(p[4:])
		e.InfoMask = binary.LittleEndian.Uint32(p[8:])
		for w := range e.Subtypes {
			e.Subtypes[w] = binary.LittleEndian.Uint32(p[12+4*w:])
		}
	}
	return NewFilter(entries...)
}

// MarshalBinary encodes the filter as struct watch_notification_filter,
// ready for IOC_WATCH_QUEUE_SET_FILTER.
func (f *Filter) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, FilterHeaderSize+len(f.given)*FilterEntrySize)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.given)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, e := range f.given {
		b = binary.LittleEndian.AppendUint32(b, uint32(e.Type))
		b = binary.LittleEndian.AppendUint32(b, e.InfoFilter)
		b = binary.LittleEndian.AppendUint32(b, e.InfoMask)
		for _, w := range e.Subtypes {
			b = binary.LittleEndian.AppendUint32(b, w)
		}
	}
	return b, nil
}

// Match reports whether a record with this header passes, as
// kernel/watch_queue.c:filter_watch_notification decides. info must already
// carry the watch's tag, so filters can select on it. Meta records are not
// filtered by the engine at all (they bypass Match).
func (f *Filter) Match(typ Type, subtype uint8, info uint32) bool {
	for i := range f.kept {
		e := &f.kept[i]
		if e.Type == typ && e.Subtypes[subtype>>5]&(1<<(subtype&31)) != 0 && info&e.InfoMask == e.InfoFilter {
			return true
		}
	}
	return false
}

// String describes the filter for logs.
func (f *Filter) String() string {
	return fmt.Sprintf("filter{%d entries, %d kept}", len(f.given), len(f.kept))
}

// TypeFilter is the one-entry filter that passes records of type t with
// the given subtypes, or with every subtype if none are given, as
// samples/watch_queue/watch_test.c's key filter does.
func TypeFilter(t Type, subtypes ...uint8) *Filter {
	e := FilterEntry{Type: t, Subtypes: AllSubtypes}
	if len(subtypes) > 0 {
		e.Subtypes = SubtypeSet(subtypes...)
	}
	return &Filter{kept: []FilterEntry{e}, given: []FilterEntry{e}}
}
