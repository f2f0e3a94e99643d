package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq/printer"
	"github.com/watchq/watchq/record"
)

func newDecodeCommand() *cobra.Command {
	var (
		asJSON   bool
		raw      bool
		format   string
		readSize int
	)
	cmd := &cobra.Command{
		Use:   "decode [FILE|-]",
		Short: "Print a captured record stream in the sample's format",
		Long: `Decode reads a captured byte stream -- records back to back, as read(2) on a
notification pipe returns them, or as "watchq watch --capture" writes them
-- from FILE or standard input, and prints it in the kernel sample's format
or as JSON lines.

The records are grouped into reads as a reader with a --read-size buffer
(433 bytes, like the sample; 8 to 65536) would have received them: each
"read() = N" line covers as many whole records as fit. No read of a
notification pipe returns more than 65536 bytes: its queue holds at most
512 notes of 128 bytes.

A malformed record (a length below 8 or past the end of the input) stops
the decoding: everything before it is printed, then the error with the
record's offset, and the exit status is 1.

Decode prints in the sample's format unless --format says otherwise; block
devices are shown by number (the capture may come from another machine).

` + FormatHelp,
		Example: `  watchq decode capture.bin
  watchq watch keys --capture /tmp/keys.bin --count 10 && watchq decode --json /tmp/keys.bin`,
		Args: positional(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if readSize < record.HeaderSize || readSize > MaxReadSize {
				return usageError{fmt.Errorf("--read-size %d: must be %d..%d (no read of a notification pipe returns more than its %d notes of %d bytes)",
					readSize, record.HeaderSize, MaxReadSize, record.MaxNotes, record.NoteSize)}
			}
			name := "-"
			if len(args) == 1 {
				name = args[0]
			}
			var in io.Reader = cmd.InOrStdin()
			if name != "-" {
				f, err := os.Open(name)
				if err != nil {
					return fmt.Errorf("decode: %w", err)
				}
				defer f.Close()
				in = f
			} else {
				name = "standard input"
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			popts, err := printerOptions(out, format, asJSON, raw)
			if err != nil {
				return err
			}
			if format == "" && !asJSON {
				popts.Format = printer.FormatSample // decode shows reads by default
			}
			popts.Devices = printer.NoDeviceNames // the capture is from elsewhere or earlier
			if err := Decode(out, in, popts, readSize); err != nil {
				return fmt.Errorf("decode %s: %w", name, err)
			}
			return nil
		},
	}
	addFormatFlags(cmd, &format, &asJSON, &raw)
	cmd.Flags().IntVar(&readSize, "read-size", ReadSize, "group records into reads of at most this many `bytes`")
	return cmd
}

// MaxReadSize is the largest --read-size: no read(2) of a notification
// pipe returns more than its whole queue, at most record.MaxNotes notes
// (IOC_WATCH_QUEUE_SET_SIZE's limit) of record.NoteSize bytes, so a larger
// buffer groups nothing differently.
const MaxReadSize = record.MaxNotes * record.NoteSize

// DecodeError is a malformed record in a decoded stream.
type DecodeError struct {
	Offset int64  // byte offset of the record in the stream
	Reason string // what is wrong with it
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("malformed record at offset %d (%#x): %s", e.Offset, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, record.ErrMalformed) hold.
func (e *DecodeError) Unwrap() error { return record.ErrMalformed }

// Decode reads records back to back from r and prints them to w, grouped
// into reads of at most readSize bytes (record.HeaderSize..MaxReadSize).
// It stops at the first malformed record with a *DecodeError, after
// printing every record before it.
func Decode(w io.Writer, r io.Reader, popts printer.Options, readSize int) error {
	if readSize < record.HeaderSize || readSize > MaxReadSize {
		return fmt.Errorf("read size %d is not in %d..%d", readSize, record.HeaderSize, MaxReadSize)
	}
	p := printer.New(w, popts)
	br := bufio.NewReaderSize(r, 64<<10)
	group := make([]byte, 0, readSize)
	var off int64 // offset of the next record
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		err := p.Read(group)
		group = group[:0]
		return err
	}
	for {
		hdr, err := br.Peek(record.HeaderSize)
		if len(hdr) == 0 && errors.Is(err, io.EOF) {
			return flush()
		}
		if err != nil && !errors.Is(err, io.EOF) {
			flush()
			return err
		}
		if len(hdr) < record.HeaderSize {
			flush()
			return &DecodeError{off, fmt.Sprintf("%d bytes left, a record header needs %d", len(hdr), record.HeaderSize)}
		}
		n := record.HeaderAt(hdr).Len()
		if n < record.HeaderSize {
			flush()
			return &DecodeError{off, fmt.Sprintf("length %d is below the header size %d", n, record.HeaderSize)}
		}
		rec, err := br.Peek(n)
		if len(rec) < n {
			flush()
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			return &DecodeError{off, fmt.Sprintf("length %d runs past the end of the input (%d bytes left)", n, len(rec))}
		}
		if _, err := record.ParseRecord(rec); err != nil {
			flush()
			var re *record.RecordError
			if errors.As(err, &re) {
				return &DecodeError{off, re.Reason}
			}
			return &DecodeError{off, err.Error()}
		}
		if n > readSize {
			flush()
			return fmt.Errorf("record at offset %d (%#x) is %d bytes, more than --read-size %d (a read would fail with ENOBUFS)", off, off, n, readSize)
		}
		if len(group)+n > readSize {
			if err := flush(); err != nil {
				return err
			}
		}
		group = append(group, rec...)
		br.Discard(n)
		off += int64(n)
	}
}
