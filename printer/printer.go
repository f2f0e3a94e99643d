// Package printer prints notification records the way the kernel's sample
// program (samples/watch_queue/watch_test.c, with the ver #2 block and USB
// additions) prints them, or as JSON lines for tools.
package printer

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/watchq/watchq/record"
)

// Printer writes records to an io.Writer. It is not safe for concurrent use.
type Printer struct {
	w    io.Writer
	json bool
	enc  *json.Encoder
}

// New returns a printer in the sample's text format, or JSON lines when
// asJSON is set.
func New(w io.Writer, asJSON bool) *Printer {
	p := &Printer{w: w, json: asJSON}
	if asJSON {
		p.enc = json.NewEncoder(w)
	}
	return p
}

// Read prints the result of one read: "read() = N" and then each record
// (text), or one JSON object per record. A malformed record is reported
// as the sample reports it ("Bad message length") and ends the buffer; the
// returned error says where.
func (p *Printer) Read(buf []byte) error {
	if !p.json {
		fmt.Fprintf(p.w, "read() = %d\n", len(buf))
	}
	off := 0
	for r, err := range record.Records(buf) {
		if err != nil {
			if !p.json {
				fmt.Fprintf(p.w, "Bad message at %#x: %v\n", off, err)
			}
			return err
		}
		p.record(off, r)
		off += len(r)
	}
	return nil
}

func (p *Printer) record(off int, r record.Record) {
	if p.json {
		_ = p.enc.Encode(JSON(r))
		return
	}
	h := r.Header()
	fmt.Fprintf(p.w, "NOTIFY[%03x]: ty=%06x sy=%02x i=%08x\n", off, uint32(h.Type), h.Subtype, h.Info)
	fmt.Fprintln(p.w, Line(r))
}

// Line is the sample's description line for one record: "KEY … change=…",
// "BLOCK …", "USB …", "-- LOSS --", "REMOVAL of watchpoint …".
func Line(r record.Record) string {
	h := r.Header()
	switch h.Type {
	case record.TypeMeta:
		switch h.Subtype {
		case record.MetaRemoval:
			return fmt.Sprintf("REMOVAL of watchpoint %08x", h.Info&record.InfoID>>record.InfoIDShift)
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

// Object is the JSON form of a record.
type Object struct {
	Type     string          `json:"type"`
	TypeNum  uint32          `json:"ty"`
	Subtype  uint8           `json:"sy"`
	Info     uint32          `json:"info"`
	Tag      record.Tag      `json:"tag"`
	Len      int             `json:"len"`
	Event    string          `json:"event,omitempty"`
	KeyID    uint32          `json:"key_id,omitempty"`
	Aux      uint32          `json:"aux,omitempty"`
	Dev      string          `json:"dev,omitempty"`
	Sector   uint64          `json:"sector,omitempty"`
	Name     string          `json:"name,omitempty"`
	ObjectID record.ObjectID `json:"id,omitempty"`
	Lost     uint16          `json:"lost,omitempty"`
	Raw      []byte          `json:"raw,omitempty"`
}

// JSON converts a record to its JSON form.
func JSON(r record.Record) Object {
	h := r.Header()
	o := Object{Type: h.Type.String(), TypeNum: uint32(h.Type), Subtype: h.Subtype, Info: h.Info, Tag: h.Tag(), Len: len(r)}
	switch h.Type {
	case record.TypeMeta:
		if m, err := r.Removal(); err == nil {
			o.Event, o.ObjectID = "removal", m.ID
		} else if l, err := r.Loss(); err == nil {
			o.Event, o.Lost = "loss", l.Count
		}
	case record.TypeKey:
		if k, err := r.Key(); err == nil {
			o.Event, o.KeyID, o.Aux = record.KeySubtypeName(k.Subtype), k.KeyID, k.Aux
		}
	case record.TypeBlock:
		if b, err := r.Block(); err == nil {
			ma, mi := record.SplitKernelDev(b.Dev)
			o.Event, o.Dev, o.Sector, o.Name = record.BlockSubtypeName(b.Subtype), fmt.Sprintf("%d:%d", ma, mi), b.Sector, b.Name
		}
	case record.TypeUSB:
		if u, err := r.USB(); err == nil {
			o.Event, o.Name = record.USBSubtypeName(u.Subtype), u.Name
		}
	default:
		o.Raw = append([]byte(nil), r[record.HeaderSize:]...)
	}
	return o
}
