package printer

import (
	"fmt"

	"github.com/watchq/watchq/record"
)

// Sample is the kernel sample's description line for one record:
// "KEY … change=…", "BLOCK …", "USB …", "-- LOSS --", "REMOVAL of
// watchpoint …" (samples/watch_queue/watch_test.c and the ver #2 sample).
func Sample(r record.Record) string {
	h := r.Header()
	switch h.Type {
	case record.TypeMeta:
		switch h.Subtype {
		case record.MetaRemoval:
			return fmt.Sprintf("REMOVAL of watchpoint %08x", uint32(h.Tag()))
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
	}
	return "other type"
}

// keyctlWords are keyutils' words for key subtypes (keyctl_watch.c:
// saw_key_change).
var keyctlWords = [...]string{
	record.KeyInstantiated: "inst", record.KeyUpdated: "upd", record.KeyLinked: "link",
	record.KeyUnlinked: "unlk", record.KeyCleared: "clr", record.KeyRevoked: "rev",
	record.KeyInvalidated: "inv", record.KeySetattr: "attr",
}

// Keyctl is the line keyutils' `keyctl watch` prints for r, and false for
// the records it prints nothing for (other types, key records of another
// length, unknown subtypes), as keyctl_watch.c's consumer does: "ID link
// AUX", "ID unlk AUX", "ID upd", …, "ID gc" for a removal (0 without an
// id), "-- LOSS --".
func Keyctl(r record.Record) (string, bool) {
	h := r.Header()
	switch h.Type {
	case record.TypeMeta:
		switch h.Subtype {
		case record.MetaRemoval:
			m, _ := r.Removal()
			return fmt.Sprintf("%d gc", uint32(m.ID)), true
		case record.MetaLoss:
			return "-- LOSS --", true
		}
	case record.TypeKey:
		k, err := r.Key()
		if err != nil || int(k.Subtype) >= len(keyctlWords) {
			return "", false
		}
		switch k.Subtype {
		case record.KeyLinked, record.KeyUnlinked:
			return fmt.Sprintf("%d %s %d", k.KeyID, keyctlWords[k.Subtype], k.Aux), true
		}
		return fmt.Sprintf("%d %s", k.KeyID, keyctlWords[k.Subtype]), true
	}
	return "", false
}

// Line is the line format's text for r, after the timestamp: source,
// object, event, details. names names the watch a removal record ends
// (nil: by tag only); devices resolves block devices (nil: numbers only).
//
//	key 123456 linked key=654321 tag=1
//	block loop0 (7:0) io sector=2048 tag=4
//	block loop0 (7:0) add size=204800 tag=4
//	usb 3-7.7 dev-add tag=4
//	removal tag=1: key 123456 (@s) is no longer watched
//	loss 12 records lost
func Line(r record.Record, names Namer, devices DeviceNamer) string {
	h := r.Header()
	tag := fmt.Sprintf("tag=%d", h.Tag())
	switch h.Type {
	case record.TypeMeta:
		switch h.Subtype {
		case record.MetaRemoval:
			m, _ := r.Removal()
			what := ""
			if names != nil {
				what = names.WatchName(m.Tag)
			}
			if what == "" && m.ID != 0 {
				what = fmt.Sprintf("object %d", m.ID)
			}
			if what == "" {
				return fmt.Sprintf("removal %s: the watch is gone", tag)
			}
			return fmt.Sprintf("removal %s: %s is no longer watched", tag, what)
		case record.MetaLoss:
			l, _ := r.Loss()
			return l.String()
		}
	case record.TypeKey:
		if k, err := r.Key(); err == nil {
			return k.String() + " " + tag
		}
	case record.TypeBlock:
		if b, err := r.Block(); err == nil {
			if b.Name == "" && devices != nil {
				b.Name = devices.DeviceName(record.SplitKernelDev(b.Dev))
			}
			return b.String() + " " + tag
		}
	case record.TypeUSB:
		if u, err := r.USB(); err == nil {
			return u.String() + " " + tag
		}
	default:
		if h.Type.IsPublisher() {
			return fmt.Sprintf("%s subtype=%d data=%x %s", h.Type, h.Subtype, []byte(r[record.HeaderSize:]), tag)
		}
	}
	return fmt.Sprintf("%s subtype=%d len=%d data=%x %s", h.Type, h.Subtype, len(r), []byte(r[record.HeaderSize:]), tag)
}
