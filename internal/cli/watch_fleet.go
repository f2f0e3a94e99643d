package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/watchq/watchq/fleet"
	"github.com/watchq/watchq/printer"
	"github.com/watchq/watchq/record"
)

// fleetOptions are the flags of watch --from.
type fleetOptions struct {
	from    string
	stream  string
	prefix  string
	durable string
	hosts   []string
	classes []string
	deliver string
	nf      natsFlags
}

// FleetHelp documents watch --from, for help and man pages.
const FleetHelp = `With --from, watch reads a fleet's records from a NATS JetStream stream
that watchq forward publishes to, instead of watching this host: every
record of the chosen hosts (--host, default all) and classes (--class:
usb, block-errors, block-lifecycle, publisher, a publisher type; default
all; a host's loss records always come with its other records), in each
host's order, in every --format of the local watch with the host named:

    line    2026-12-01T10:00:00.123Z web1 block 7:0 io sector=42 tag=0 seq=17
    sample  web1: read() = 24 seq=17 boot=5e0c... time=2026-12-01T10:00:00.123Z
            web1: NOTIFY[000]: ty=000002 sy=0a i=00000018
            web1: BLOCK 00700000 e=10[I/O] s=2a
    keyctl  web1: (key records only, as keyctl watch)
    json    the local schema plus host, boot, seq, time (the forwarder's),
            subject and stream_seq

The time is when the forwarder read the record. A loss record says exactly
how many records the host lost there and why; a jump in a host's sequence
numbers (records the stream no longer holds) is printed as a gap. --filter
applies to the records as they arrive. With --durable NAME the stream
remembers what was printed, and watch started again with the same name
goes on from there; without it watch starts at --deliver (all, new, last,
seq:N or time:RFC3339).`

func (o *fleetOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "read a fleet's records from the NATS servers at `URL` (nats://HOST:4222, tls://...) instead of this host")
	f.StringVar(&o.stream, "stream", fleet.DefaultStream, "with --from: the JetStream stream `name`")
	f.StringVar(&o.prefix, "prefix", fleet.DefaultPrefix, "with --from: the subjects' first `token`")
	f.StringVar(&o.durable, "durable", "", "with --from: durable consumer `name` (resume where the last run stopped)")
	f.StringSliceVar(&o.hosts, "host", nil, "with --from: only these `hosts` (repeatable)")
	f.StringSliceVar(&o.classes, "class", nil, "with --from: only these `classes`: usb, block-errors, block-lifecycle, publisher, a publisher type (repeatable)")
	f.StringVar(&o.deliver, "deliver", "all", "with --from: where a new consumer starts: all, new, last, seq:N or time:RFC3339")
	o.nf.add(cmd)
}

// consumerConfig turns the flags into a consumer configuration.
func (o *fleetOptions) consumerConfig() (fleet.ConsumerConfig, error) {
	cc := fleet.ConsumerConfig{Stream: o.stream, Prefix: o.prefix, Durable: o.durable, Hosts: o.hosts}
	for _, s := range o.classes {
		c, err := fleet.ParseClass(s)
		if err != nil {
			return cc, err
		}
		cc.Classes = append(cc.Classes, c)
	}
	switch d := o.deliver; {
	case d == "all":
		cc.Deliver = fleet.DeliverAll
	case d == "new":
		cc.Deliver = fleet.DeliverNew
	case d == "last":
		cc.Deliver = fleet.DeliverLast
	case strings.HasPrefix(d, "seq:"):
		n, err := strconv.ParseUint(d[4:], 10, 64)
		if err != nil || n == 0 {
			return cc, fmt.Errorf("--deliver %s: want seq:N with N >= 1", d)
		}
		cc.Deliver, cc.StartSeq = fleet.DeliverFromSeq, n
	case strings.HasPrefix(d, "time:"):
		t, err := time.Parse(time.RFC3339Nano, d[5:])
		if err != nil {
			return cc, fmt.Errorf("--deliver %s: %w", d, err)
		}
		cc.Deliver, cc.StartTime = fleet.DeliverFromTime, t
	default:
		return cc, fmt.Errorf("--deliver %q: want all, new, last, seq:N or time:RFC3339", d)
	}
	return cc, nil
}

// runFleet is watch --from: it prints the stream's records until the
// context ends, --count is reached or --timeout passes.
func (o *watchOptions) runFleet(cmd *cobra.Command, fo *fleetOptions) error {
	for _, name := range []string{"backend", "interval", "socket", "size"} {
		if fl := cmd.Flags().Lookup(name); fl != nil && fl.Changed {
			return usageError{fmt.Errorf("--%s does not apply with --from", name)}
		}
	}
	if err := checkURL("from", fo.from); err != nil {
		return err
	}
	if o.count < 0 {
		return usageError{fmt.Errorf("--count %d: must be 0 or more", o.count)}
	}
	cc, err := fo.consumerConfig()
	if err != nil {
		return usageError{err}
	}
	var flt *record.Filter
	if entries, err := ParseFilter(o.filters); err != nil {
		return usageError{err}
	} else if entries != nil {
		if flt, err = record.NewFilter(entries...); err != nil {
			return usageError{fmt.Errorf("filter: %w", err)}
		}
	}
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	popts, err := printerOptions(stdout, o.format, o.json, o.raw)
	if err != nil {
		return err
	}
	cc.OnError = func(err error) { fmt.Fprintf(stderr, "watchq: %v\n", err) }

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.timeout, errTimeout)
		defer cancel()
	}
	ncfg, err := fo.nf.config(fo.from, "watchq watch")
	if err != nil {
		return err
	}
	nc, err := ncfg.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var capture io.Writer
	if o.capture != "" {
		f, err := os.OpenFile(o.capture, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		defer f.Close()
		capture = f
	}
	fmt.Fprintf(stderr, "watchq: watching stream %s at %s: %s\n", cc.Stream, fo.from, strings.Join(cc.FilterSubjects(), " "))

	out := bufio.NewWriter(stdout)
	defer out.Flush()
	fp := &fleetPrinter{w: out, o: popts, enc: json.NewEncoder(out)}
	seen := 0
	for m, err := range fleet.Watch(ctx, js, cc) {
		if err != nil {
			if ctx.Err() == nil {
				return err
			}
			if context.Cause(ctx) == errTimeout && o.count > 0 {
				return fmt.Errorf("timeout after %v: %d of %d records", o.timeout, seen, o.count)
			}
			return nil
		}
		h := m.Record.Header()
		if flt != nil && h.Type != record.TypeMeta && !flt.Match(h.Type, h.Subtype, h.Info) {
			continue
		}
		if capture != nil {
			if _, err := capture.Write(m.Record); err != nil {
				return fmt.Errorf("capture: %w", err)
			}
		}
		if err = fp.print(m); err == nil {
			err = out.Flush()
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		seen++
		if o.count > 0 && seen >= o.count {
			return nil
		}
	}
	return errors.New("fleet consumer ended")
}

// fleetPrinter prints fleet records in the local watch's formats, each
// with its host named. Devices are never resolved through this machine's
// sysfs: the records come from other hosts.
type fleetPrinter struct {
	w   io.Writer
	o   printer.Options
	enc *json.Encoder
}

func (p *fleetPrinter) print(m *fleet.Message) error {
	switch p.o.Format {
	case printer.FormatSample:
		return p.sample(m)
	case printer.FormatKeyctl:
		// keyctl watch prints key records only; so does this.
		if l, ok := printer.Keyctl(m.Record); ok {
			_, err := fmt.Fprintf(p.w, "%s: %s\n", m.Host, l)
			return err
		}
		return nil
	case printer.FormatJSON:
		o := fleetJSON(m)
		o.TS = time.Now().UTC().Format(time.RFC3339Nano)
		if p.o.Raw {
			o.Raw = fmt.Sprintf("%x", []byte(m.Record))
		}
		return p.enc.Encode(o)
	}
	// line: the forwarder's time, the host, the record's line, where it
	// is in the host's sequence.
	if m.Gap > 0 {
		fmt.Fprintf(p.w, "%s %s gap %d sequence numbers before %d not in the stream\n", m.Time.UTC().Format(time.RFC3339Nano), m.Host, m.Gap, m.Seq)
	}
	line := printer.Line(m.Record, nil, printer.NoDeviceNames)
	if m.Record.IsLoss() {
		line = lossText(m)
	}
	late := ""
	if m.Late {
		late = " late"
	}
	_, err := fmt.Fprintf(p.w, "%s %s %s seq=%d%s\n", m.Time.UTC().Format(time.RFC3339Nano), m.Host, line, m.Seq, late)
	return err
}

// lossText says how many records a host lost and why, exactly.
func lossText(m *fleet.Message) string {
	if m.Lost == 0 {
		return fmt.Sprintf("loss records lost, not counted (%s)", m.Cause)
	}
	return fmt.Sprintf("loss %d records lost (%s)", m.Lost, m.Cause)
}

// sample prints one fleet record as the local watch prints a read of one
// record in the sample's format, each line after the host's name.
func (p *fleetPrinter) sample(m *fleet.Message) error {
	w := p.w
	h := m.Record.Header()
	pre := m.Host + ": "
	if m.Gap > 0 {
		fmt.Fprintf(w, "%s-- GAP -- (%d sequence numbers before %d not in the stream)\n", pre, m.Gap, m.Seq)
	}
	late := ""
	if m.Late {
		late = " late"
	}
	fmt.Fprintf(w, "%sread() = %d seq=%d boot=%s time=%s%s\n", pre, len(m.Record), m.Seq, m.Boot, m.Time.UTC().Format(time.RFC3339Nano), late)
	fmt.Fprintf(w, "%sNOTIFY[000]: ty=%06x sy=%02x i=%08x\n", pre, uint32(h.Type), h.Subtype, h.Info)
	line := printer.Sample(m.Record)
	if m.Record.IsLoss() {
		line = fmt.Sprintf("-- LOSS -- (%d records: %s)", m.Lost, m.Cause)
		if m.Lost == 0 {
			line = fmt.Sprintf("-- LOSS -- (records not counted: %s)", m.Cause)
		}
	}
	_, err := fmt.Fprintf(w, "%s%s\n", pre, line)
	return err
}

// fleetObject is the JSON form of a fleet record: the record's fields in
// the local watch's schema, and where it came from.
type fleetObject struct {
	Host      string    `json:"host"`
	Boot      string    `json:"boot"`
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"` // when the forwarder read it
	Subject   string    `json:"subject"`
	StreamSeq uint64    `json:"stream_seq"`
	Lost      uint64    `json:"lost,omitempty"` // exact, unlike the record's own count
	Cause     string    `json:"cause,omitempty"`
	Gap       uint64    `json:"gap,omitempty"`
	Late      bool      `json:"late,omitempty"`
	printer.Object
}

func fleetJSON(m *fleet.Message) fleetObject {
	o := fleetObject{Host: m.Host, Boot: m.Boot, Seq: m.Seq, Time: m.Time, Subject: m.Subject, StreamSeq: m.StreamSeq,
		Gap: m.Gap, Late: m.Late, Object: printer.JSON(m.Record, printer.NoDeviceNames)}
	if m.Record.IsLoss() {
		o.Lost, o.Cause = m.Lost, m.Cause.String()
	}
	return o
}
