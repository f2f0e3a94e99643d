package record

import (
	"context"
	"encoding/binary"
	"fmt"
	"iter"
)

// Record is one whole record's bytes, header included, in the kernel's
// layout. Records returned by this package are always valid: 8 <= len(r) <=
// 127 and the header's length field equals len(r).
type Record []byte

// Header decodes the record's header.
func (r Record) Header() Header { return HeaderAt(r) }

// Type is the record's type.
func (r Record) Type() Type { return r.Header().Type }

// Subtype is the record's subtype.
func (r Record) Subtype() uint8 { return r[3] }

// Tag is the tag of the watch the record was delivered under.
func (r Record) Tag() Tag { return r.Header().Tag() }

// IsLoss reports whether r is the loss record read() makes up.
func (r Record) IsLoss() bool { return r.Type() == TypeMeta && r.Subtype() == MetaLoss }

// IsRemoval reports whether r is a watch removal record.
func (r Record) IsRemoval() bool { return r.Type() == TypeMeta && r.Subtype() == MetaRemoval }

// ParseRecord checks the record at the start of b and returns it (aliasing
// b) and its length. It never trusts the length field: 8 <= len <=
// len(b), len <= 127.
func ParseRecord(b []byte) (Record, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	return Record(b[:h.Len()]), nil
}

// Records iterates over the records packed back to back in b, as one read(2)
// of a notification pipe returns them. A malformed record ends the iteration
// with a *RecordError giving its offset; the records before it are yielded.
func Records(b []byte) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		off := 0
		for off < len(b) {
			r, err := ParseRecord(b[off:])
			if err != nil {
				re := err.(*RecordError)
				re.Offset = off
				yield(nil, re)
				return
			}
			if !yield(r, nil) {
				return
			}
			off += len(r)
		}
	}
}

// String is the record in the kernel sample's NOTIFY line format.
func (r Record) String() string {
	h := r.Header()
	return fmt.Sprintf("ty=%06x sy=%02x i=%08x", uint32(h.Type), h.Subtype, h.Info)
}

// Removal is struct watch_notification_removal: the watch with Tag was
// removed, because its object was destroyed or because it was unwatched.
// ID is the object id (the key serial for keys); 0 is sent as the short,
// 8-byte form.
type Removal struct {
	Tag Tag
	ID  ObjectID
}

// AppendBinary appends the record: 16 bytes, or 8 when ID is 0.
func (m Removal) AppendBinary(b []byte) ([]byte, error) {
	n := RemovalSize
	if m.ID == 0 {
		n = RemovalSizeNoID
	}
	b, _ = Header{Type: TypeMeta, Subtype: MetaRemoval, Info: MakeInfo(n, m.Tag, 0)}.AppendBinary(b)
	if m.ID != 0 {
		b = binary.LittleEndian.AppendUint64(b, uint64(m.ID))
	}
	return b, nil
}

// Removal decodes a removal record.
func (r Record) Removal() (Removal, error) {
	if !r.IsRemoval() {
		return Removal{}, &RecordError{Reason: fmt.Sprintf("%v is not a removal record", r)}
	}
	m := Removal{Tag: r.Tag()}
	switch len(r) {
	case RemovalSizeNoID:
	case RemovalSize:
		m.ID = ObjectID(binary.LittleEndian.Uint64(r[8:]))
	default:
		return m, &RecordError{Reason: fmt.Sprintf("removal record of %d bytes", len(r))}
	}
	return m, nil
}

// Loss is the 8-byte loss record (WATCH_META_LOSS_NOTIFICATION). The kernel
// leaves its type-info bits 0; watchq puts there the number of records lost
// since the record before it, saturating at 0xffff. Kernel readers ignore
// those bits.
type Loss struct {
	Count uint16 // records lost; 0xffff means at least that many
}

// AppendBinary appends the 8-byte loss record.
func (l Loss) AppendBinary(b []byte) ([]byte, error) {
	return Header{Type: TypeMeta, Subtype: MetaLoss, Info: MakeInfo(LossSize, 0, l.Count)}.AppendBinary(b)
}

// Loss decodes a loss record.
func (r Record) Loss() (Loss, error) {
	if !r.IsLoss() {
		return Loss{}, &RecordError{Reason: fmt.Sprintf("%v is not a loss record", r)}
	}
	return Loss{Count: r.Header().TypeInfo()}, nil
}

// PutLoss writes into b[:8] the loss record for count lost records, the
// count saturating at 0xffff.
func PutLoss(b []byte, count uint64) {
	if count > 0xffff {
		count = 0xffff
	}
	Header{Type: TypeMeta, Subtype: MetaLoss, Info: MakeInfo(LossSize, 0, uint16(count))}.Put(b)
}

// Reader is a source of whole records read one at a time: an engine queue,
// a client's queue.
type Reader interface {
	// Next blocks for the next record; its error ends the stream.
	Next(ctx context.Context) (Record, error)
}

// Each iterates over r's records until Next fails; the error (ctx.Err(),
// a closed queue) is yielded once with a nil record. It is the Records
// iterator of every queue type.
func Each(ctx context.Context, r Reader) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		for {
			rec, err := r.Next(ctx)
			if !yield(rec, err) || err != nil {
				return
			}
		}
	}
}
