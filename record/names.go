package record

import "strings"

// EventName is the name of subtype for records of type t, as watchq's
// filters, JSON and line output spell it: lower case, words joined by
// dashes ("linked", "critical-medium", "io", "dev-add", "removal", "loss").
// A subtype without a name is "" (the sample formats print the kernel's
// own spelling: KeySubtypeName and friends). It is the one home of the
// names: filters parse them with ParseEvent.
func EventName(t Type, subtype uint8) string {
	var n string
	switch t {
	case TypeMeta:
		switch subtype {
		case MetaRemoval:
			return "removal"
		case MetaLoss:
			return "loss"
		}
		return ""
	case TypeKey:
		n = KeySubtypeName(subtype)
	case TypeBlock:
		n = BlockSubtypeName(subtype)
	case TypeUSB:
		n = USBSubtypeName(subtype)
	default:
		return ""
	}
	if n == "unknown" {
		return ""
	}
	return NormalizeEventName(n)
}

// NormalizeEventName spells a subtype name as EventName does: lower case,
// spaces as dashes, no slashes ("critical medium" → "critical-medium",
// "I/O" → "io").
func NormalizeEventName(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.ReplaceAll(s, " ", "-")
	return strings.ReplaceAll(s, "/", "")
}

// ParseEvent returns the subtype of type t that EventName calls name
// (normalised first), and whether there is one.
func ParseEvent(t Type, name string) (uint8, bool) {
	name = NormalizeEventName(name)
	for i := range 256 {
		if EventName(t, uint8(i)) == name && name != "" {
			return uint8(i), true
		}
	}
	return 0, false
}
