package record

import "fmt"

// String is the record for people, as watchq's line format prints it
// (without the watch tag): "key 805056093 linked key=1035096409".
func (k KeyNotification) String() string {
	s := fmt.Sprintf("key %d %s", k.KeyID, eventOrNumber(TypeKey, k.Subtype))
	switch k.Subtype {
	case KeyLinked, KeyUnlinked:
		s += fmt.Sprintf(" key=%d", k.Aux)
	case KeyInstantiated:
		if k.Aux != 0 {
			s += fmt.Sprintf(" error=%d", int32(k.Aux))
		}
	}
	return s
}

// String is the record for people: "block loop0 (7:0) io sector=2048",
// "block 8:1 add size=4096 partition" (the name when the record carries
// one, or the caller filled it in).
func (n BlockNotification) String() string {
	ma, mi := SplitKernelDev(n.Dev)
	dev := fmt.Sprintf("%d:%d", ma, mi)
	if n.Name != "" {
		dev = fmt.Sprintf("%s (%s)", n.Name, dev)
	}
	s := fmt.Sprintf("block %s %s", dev, eventOrNumber(TypeBlock, n.Subtype))
	switch {
	case IsBlockError(n.Subtype):
		s += fmt.Sprintf(" sector=%d", n.Sector)
	case BlockHasSize(n.Subtype):
		s += fmt.Sprintf(" size=%d", n.Sector)
	}
	if n.IsPartition() {
		s += " partition"
	}
	return s
}

// IsPartition reports whether a lifecycle record is about a partition
// (BlockFlagPartition).
func (n BlockNotification) IsPartition() bool {
	return uint32(n.TypeInfo)<<InfoTypeInfoShift&BlockFlagPartition != 0
}

// String is the record for people: "usb 3-7.7 dev-add".
func (n USBNotification) String() string {
	return fmt.Sprintf("usb %s %s", n.Name, eventOrNumber(TypeUSB, n.Subtype))
}

// String is the record for people: "removal tag=1 id=1234".
func (m Removal) String() string {
	if m.ID == 0 {
		return fmt.Sprintf("removal tag=%d", m.Tag)
	}
	return fmt.Sprintf("removal tag=%d id=%d", m.Tag, m.ID)
}

// String is the record for people: "loss 12 records lost".
func (l Loss) String() string {
	switch l.Count {
	case 0:
		return "loss records were lost"
	case 0xffff:
		return "loss at least 65535 records lost"
	}
	return fmt.Sprintf("loss %d records lost", l.Count)
}

// eventOrNumber is EventName, or "subtype=N" for a subtype without one.
func eventOrNumber(t Type, subtype uint8) string {
	if n := EventName(t, subtype); n != "" {
		return n
	}
	return fmt.Sprintf("subtype=%d", subtype)
}
