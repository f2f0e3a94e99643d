package record

import "fmt"

// ParsePublisherType converts a number to a publisher type, or says why it
// is none: EINVAL outside TypeUserFirst..TypeUserLast. It is the one check
// of the publisher range for numbers from outside (protocol, config, flags).
func ParsePublisherType(n uint64) (Type, error) {
	if n > uint64(TypeMax) || !Type(n).IsPublisher() {
		return 0, errInval("type %#x is outside the publisher range %#x..%#x", n, uint32(TypeUserFirst), uint32(TypeUserLast))
	}
	return Type(n), nil
}

// ParsePublished checks a record a userspace publisher posts and returns
// it: 8..127 bytes, the length field equal to len(b), a publisher type, and
// a zero tag byte (delivery stamps each watcher's tag). Each failure is an
// *InvalidError (EINVAL) with the reason.
func ParsePublished(b []byte) (Record, error) {
	if len(b) < HeaderSize || len(b) > MaxRecordSize {
		return nil, errInval("record of %d bytes: a record is %d..%d bytes", len(b), HeaderSize, MaxRecordSize)
	}
	h := HeaderAt(b)
	if h.Len() != len(b) {
		return nil, errInval("record length field says %d, record has %d bytes", h.Len(), len(b))
	}
	if _, err := ParsePublisherType(uint64(h.Type)); err != nil {
		return nil, err
	}
	if h.Tag() != 0 {
		return nil, &InvalidError{Reason: fmt.Sprintf("record tag is %d; publishers leave it 0", h.Tag())}
	}
	return Record(b), nil
}
