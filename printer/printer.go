// Package printer prints notification records in the formats watchq's
// command line offers (--format):
//
//   - line: one line per record for people: an RFC 3339 timestamp, the
//     source, the object in its natural form (decimal key ids, "loop0
//     (7:0)"), the event and its details; removals say what went, losses
//     how many records.
//   - sample: byte for byte what the kernel's sample program
//     (samples/watch_queue/watch_test.c, with the ver #2 block and USB
//     additions) prints for each read.
//   - keyctl: what keyutils' `keyctl watch` prints, so scripts written for
//     it work.
//   - json: one object per record in a documented, versioned schema (see
//     Object and docs/cli.md).
package printer

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/watchq/watchq/record"
)

// Format is an output format.
type Format uint8

// The formats.
const (
	FormatLine   Format = iota // one line per record, for people
	FormatSample               // the kernel sample's output
	FormatKeyctl               // keyutils' keyctl watch output
	FormatJSON                 // JSON lines, schema Version
)

var formatNames = [...]string{FormatLine: "line", FormatSample: "sample", FormatKeyctl: "keyctl", FormatJSON: "json"}

// Formats lists the format names, for help and completion.
func Formats() []string { return formatNames[:] }

func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// ParseFormat returns the format called name.
func ParseFormat(name string) (Format, error) {
	for i, n := range formatNames {
		if n == name {
			return Format(i), nil
		}
	}
	return 0, fmt.Errorf("unknown format %q: want line, sample, keyctl or json", name)
}

// Namer names what a watch watches, for the line format's removal lines:
// "key 1234 (@s)", "devices". Nil names nothing.
type Namer interface {
	WatchName(tag record.Tag) string
}

// Options configure a Printer.
type Options struct {
	Format Format
	// Raw adds the record's bytes in hex to JSON objects ("raw").
	Raw bool
	// Now stamps records (line and json); nil means time.Now.
	Now func() time.Time
	// Names names watches in removal lines; nil leaves them unnamed.
	Names Namer
	// Devices resolves block devices for display; nil means DevicesFromSysfs.
	Devices DeviceNamer
}

// Printer writes records to an io.Writer. It is not safe for concurrent
// use.
type Printer struct {
	w   io.Writer
	o   Options
	enc *json.Encoder
}

// New returns a printer writing to w.
func New(w io.Writer, o Options) *Printer {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Devices == nil {
		o.Devices = DevicesFromSysfs
	}
	p := &Printer{w: w, o: o}
	if o.Format == FormatJSON {
		p.enc = json.NewEncoder(w)
	}
	return p
}

// Read prints the result of one read(2) of a queue: every record in buf.
// The sample format first prints "read() = N" and each record's NOTIFY
// line, as the sample does. A malformed record ends the buffer: the sample
// format reports it as the sample does, and the error says where.
func (p *Printer) Read(buf []byte) error {
	if p.o.Format == FormatSample {
		if _, err := fmt.Fprintf(p.w, "read() = %d\n", len(buf)); err != nil {
			return err
		}
	}
	off := 0
	for r, err := range record.Records(buf) {
		if err != nil {
			if p.o.Format == FormatSample {
				fmt.Fprintf(p.w, "Bad message at %#x: %v\n", off, err)
			}
			return err
		}
		if err := p.print(off, r); err != nil {
			return err
		}
		off += len(r)
	}
	return nil
}

// Print prints one record.
func (p *Printer) Print(r record.Record) error { return p.print(0, r) }

func (p *Printer) print(off int, r record.Record) error {
	var err error
	switch p.o.Format {
	case FormatSample:
		h := r.Header()
		_, err = fmt.Fprintf(p.w, "NOTIFY[%03x]: ty=%06x sy=%02x i=%08x\n%s\n", off, uint32(h.Type), h.Subtype, h.Info, Sample(r))
	case FormatKeyctl:
		if l, ok := Keyctl(r); ok {
			_, err = fmt.Fprintln(p.w, l)
		}
	case FormatJSON:
		o := JSON(r, p.o.Devices)
		o.TS = p.o.Now().UTC().Format(time.RFC3339Nano)
		if p.o.Raw {
			o.Raw = fmt.Sprintf("%x", []byte(r))
		}
		err = p.enc.Encode(o)
	default:
		_, err = fmt.Fprintf(p.w, "%s %s\n", p.o.Now().Format(time.RFC3339Nano), Line(r, p.o.Names, p.o.Devices))
	}
	return err
}
