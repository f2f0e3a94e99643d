package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/watchq/watchq/record"
)

// FilterSyntax documents the --filter text syntax, for help and man pages.
const FilterSyntax = `Filters (--filter): one or more entries, separated by spaces or given as
repeated --filter flags; a record passes if any entry accepts it, and meta
records (loss, removal) always pass, as in the kernel. An entry is

    TYPE[:SUBTYPE,...][@TAG,...]

TYPE is key, block, usb or a publisher type number (0x800000..0xffffff).
SUBTYPE is a name or a number (0..255); without it every subtype passes.
The names are:

    key:    instantiated updated linked unlinked cleared revoked
            invalidated setattr
    block:  timeout critical-space-allocation recoverable-transport
            critical-target critical-nexus critical-medium protection
            kernel-resource device-resource io (errors, 1..10)
            add remove change media-change resize (lifecycle, 0x80..0x84)
            error lifecycle (the two groups)
    usb:    dev-add dev-remove dev-reset dev-error

TAG selects the watch the record came through (0..255): each tag becomes
its own filter entry matching the info word's WATCH_INFO_ID bits. TYPE may
be left out before @: "@4" means key, block and usb records from the watch
with tag 4. At most 16 entries in all. Examples:

    key:linked,unlinked
    usb
    block:error
    key@1 block
    key:linked,unlinked@1,2`

// subtypeGroups are the names that select several subtypes at once.
var subtypeGroups = map[record.Type]map[string][]uint8{
	record.TypeBlock: {
		"error":     {1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
		"lifecycle": {record.BlockAdd, record.BlockRemove, record.BlockChange, record.BlockMediaChange, record.BlockResize},
	},
}

// ParseFilter parses --filter values (see FilterSyntax) into filter
// entries. No values means no filter (nil, nil).
func ParseFilter(values []string) ([]record.FilterEntry, error) {
	var out []record.FilterEntry
	for _, v := range values {
		for _, word := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || r == ';' }) {
			es, err := parseFilterEntry(word)
			if err != nil {
				return nil, fmt.Errorf("filter %q: %w", word, err)
			}
			out = append(out, es...)
		}
	}
	if len(out) > record.MaxFilters {
		return nil, fmt.Errorf("filter: %d entries, at most %d", len(out), record.MaxFilters)
	}
	return out, nil
}

func parseFilterEntry(word string) ([]record.FilterEntry, error) {
	spec, tagText, hasTag := strings.Cut(word, "@")
	typText, subText, hasSub := strings.Cut(spec, ":")
	var types []record.Type
	switch t := record.NormalizeEventName(typText); t {
	case "key":
		types = []record.Type{record.TypeKey}
	case "block":
		types = []record.Type{record.TypeBlock}
	case "usb":
		types = []record.Type{record.TypeUSB}
	case "":
		if !hasTag || hasSub {
			return nil, fmt.Errorf("missing type (key, block, usb or a publisher number)")
		}
		types = []record.Type{record.TypeKey, record.TypeBlock, record.TypeUSB}
	default:
		n, err := strconv.ParseUint(t, 0, 32)
		if err == nil {
			var pt record.Type
			if pt, err = record.ParsePublisherType(n); err == nil {
				types = []record.Type{pt}
				break
			}
		}
		return nil, fmt.Errorf("unknown type %q: want key, block, usb or a publisher type %#x..%#x", typText, uint32(record.TypeUserFirst), uint32(record.TypeUserLast))
	}

	subtypes := record.AllSubtypes
	if hasSub {
		var err error
		if subtypes, err = parseSubtypes(types[0], subText); err != nil {
			return nil, err
		}
	}

	tags := []int{-1}
	if hasTag {
		tags = tags[:0]
		for _, s := range strings.Split(tagText, ",") {
			n, err := strconv.ParseUint(s, 0, 8)
			if err != nil {
				return nil, fmt.Errorf("bad tag %q: want 0..255", s)
			}
			tags = append(tags, int(n))
		}
	}

	var out []record.FilterEntry
	for _, t := range types {
		for _, tag := range tags {
			e := record.FilterEntry{Type: t, Subtypes: subtypes}
			if tag >= 0 {
				e.InfoMask = record.InfoID
				e.InfoFilter = uint32(tag) << record.InfoIDShift
			}
			out = append(out, e)
		}
	}
	return out, nil
}

func parseSubtypes(t record.Type, text string) ([8]uint32, error) {
	var set []uint8
	for _, s := range strings.Split(text, ",") {
		n := record.NormalizeEventName(s)
		if v, ok := record.ParseEvent(t, n); ok {
			set = append(set, v)
			continue
		}
		if g, ok := subtypeGroups[t][n]; ok {
			set = append(set, g...)
			continue
		}
		v, err := strconv.ParseUint(n, 0, 8)
		if err != nil {
			return [8]uint32{}, fmt.Errorf("unknown %s subtype %q", t, s)
		}
		set = append(set, uint8(v))
	}
	return record.SubtypeSet(set...), nil
}
