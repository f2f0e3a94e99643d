package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/printer"
	"github.com/watchq/watchq/record"
)

// ReadSize is the read buffer size watch uses: the kernel sample's odd 433
// bytes, so "read() = N" lines show reads as the sample would see them.
const ReadSize = 433

// devicesMode says whether a watch command watches devices.
type devicesMode int

const (
	devicesOff      devicesMode = iota // keys only
	devicesOptional                    // devices if available, else say why not
	devicesRequired                    // devices or fail
)

// watchOptions are the flags the watch commands share.
type watchOptions struct {
	size      int
	filters   []string
	format    string
	json      bool
	raw       bool
	once      bool
	socket    string
	backend   string
	interval  time.Duration
	count     int
	timeout   time.Duration
	capture   string
	wait      bool // --wait: reconnect to watchqd when it goes away
	deviceTag record.Tag
	// keyWatches counts the key watches by tag; watchKeys fills it.
	// With exitOnLastKey (watch keys), the read loop ends once a removal
	// record has ended every one, as keyctl watch ends on gc.
	keyWatches    map[record.Tag]int
	exitOnLastKey bool
	// fail ends the read loop with an error, after what is queued has
	// been printed: a source that cannot go on (watchqd went away
	// without --wait). Set by run.
	fail func(error)
	// ending is the error a source ends the command with, stored before
	// it posts the removals of its watches and calls fail, so that the
	// last key removal among them (exitOnLastKey) ends the command with
	// that error rather than status 0.
	ending atomic.Pointer[error]
	// names says what each tag watches, for removal lines.
	names tagNames

	mounts      []mountWatch                // watch mounts / watch fs
	mountPoints func(uint64) (string, bool) // resolves mount ids for the printer
}

// tagNames names watches by tag, for the printer's removal lines.
type tagNames map[record.Tag]string

// WatchName implements printer.Namer.
func (n tagNames) WatchName(t record.Tag) string { return n[t] }

func newWatchOptions() *watchOptions {
	return &watchOptions{deviceTag: TagDevices, names: tagNames{}}
}

func (o *watchOptions) addFlags(cmd *cobra.Command, keys, devices bool) {
	f := cmd.Flags()
	f.IntVar(&o.size, "size", 256, "queue size in `notes` (1..512, rounded up to pages of 32), like IOC_WATCH_QUEUE_SET_SIZE")
	f.StringArrayVar(&o.filters, "filter", nil, "queue `filter`, e.g. key:linked,unlinked or block:error or usb@4 (see the syntax above; repeatable)")
	addFormatFlags(cmd, &o.format, &o.json, &o.raw)
	f.IntVar(&o.count, "count", 0, "exit after the read that brings the records printed to `N` (0: run until interrupted)")
	f.BoolVar(&o.once, "once", false, "exit after the first read (--count 1)")
	f.DurationVar(&o.timeout, "timeout", 0, "stop after this long; with --count, not reaching N records in time is an error")
	f.StringVar(&o.capture, "capture", "", "also append the raw bytes of every read to `FILE` (for watchq decode)")
	if keys {
		f.StringVar(&o.backend, "backend", "auto", "key backend: auto, kernel (KEYCTL_WATCH_KEY), traced (BPF on the key syscalls) or poll")
		f.DurationVar(&o.interval, "interval", time.Second, "poll backend interval")
		_ = cmd.RegisterFlagCompletionFunc("backend", cobra.FixedCompletions([]string{"auto", "kernel", "traced", "poll"}, cobra.ShellCompDirectiveNoFileComp))
	}
	if devices {
		f.StringVar(&o.socket, "socket", defaultSocket(), "watchqd daemon socket `path`")
		o.addWaitFlag(cmd)
	}
	_ = cmd.RegisterFlagCompletionFunc("filter", completeFilter)
}

// addWaitFlag adds --wait, for every command that may watch through
// watchqd (daemonRelay).
func (o *watchOptions) addWaitFlag(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.wait, "wait", false, "when watchqd goes away, reconnect with backoff and watch again, marking the gap with a loss record (default: exit with status 1)")
}

// completeFilter offers filter entries for shell completion: each type,
// each type:subtype with the filter names, the groups, and tags.
func completeFilter(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	out := []string{"key", "block", "usb", "block:error", "block:lifecycle", "mount", "mount:topology", "sb", "key@1", "key@2", "@4"}
	for _, t := range []record.Type{record.TypeKey, record.TypeBlock, record.TypeUSB, record.TypeMount, record.TypeSuperblock} {
		for s := range 256 {
			if n := record.EventName(t, uint8(s)); n != "" {
				out = append(out, t.String()+":"+n)
			}
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// source is something that feeds the queue and must be closed afterwards.
type source interface{ Close() error }

// run watches ks (and devices, per mode) through one queue and prints
// every read until the context ends, --count is reached or --timeout
// passes.
func (o *watchOptions) run(cmd *cobra.Command, ks []keyArg, mode devicesMode) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	entries, err := ParseFilter(o.filters)
	if err != nil {
		return usageError{err}
	}
	if o.size < 1 || o.size > record.MaxNotes {
		return usageError{fmt.Errorf("--size %d: want 1..%d notes", o.size, record.MaxNotes)}
	}
	if o.count < 0 {
		return usageError{fmt.Errorf("--count %d: must be 0 or more", o.count)}
	}
	if o.once {
		o.count = 1
	}
	popts, err := printerOptions(stdout, o.format, o.json, o.raw)
	if err != nil {
		return err
	}
	popts.Names = o.names

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.timeout, errTimeout)
		defer cancel()
	}
	ctx, failCtx := context.WithCancelCause(ctx)
	defer failCtx(nil)
	o.fail = func(err error) { failCtx(sourceError{err}) }

	eng := watchq.NewEngine(watchq.Config{})
	q := watchq.NewQueue()
	defer q.Close()
	capacity, err := q.SetSize(o.size)
	if err != nil {
		return fmt.Errorf("queue size %d: %w", o.size, err)
	}
	filterText := "none"
	if entries != nil {
		f, err := record.NewFilter(entries...)
		if err != nil {
			return usageError{fmt.Errorf("filter: %w", err)}
		}
		if err := q.SetFilter(f); err != nil {
			return fmt.Errorf("filter: %w", err)
		}
		filterText = strings.Join(o.filters, " ")
	}

	var sources []source
	defer func() {
		for i := len(sources) - 1; i >= 0; i-- {
			sources[i].Close()
		}
	}()
	var watching []string
	if len(ks) > 0 {
		src, desc, err := o.watchKeys(ctx, eng, q, ks, stderr)
		if err != nil {
			return err
		}
		sources = append(sources, src)
		watching = append(watching, desc)
	}
	if mode != devicesOff {
		src, desc, err := o.watchDevices(ctx, eng, q, stderr)
		switch {
		case err == nil:
			sources = append(sources, src)
			watching = append(watching, desc)
		case mode == devicesRequired:
			return err
		default:
			fmt.Fprintf(stderr, "watchq: devices: unavailable: %v\n", err)
		}
	}
	if len(o.mounts) > 0 {
		src, desc, err := o.watchMounts(ctx, eng, q, stderr)
		if err != nil {
			return err
		}
		sources = append(sources, src)
		watching = append(watching, desc)
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

	fmt.Fprintf(stderr, "watchq: watching %s; queue %d notes, filter %s\n", strings.Join(watching, ", "), capacity, filterText)
	return o.readLoop(ctx, q, stdout, capture, popts)
}

// errTimeout is the cause of a context ended by --timeout.
var errTimeout = errors.New("timeout")

// sourceError is the cause of a context ended by a source that cannot go
// on (watchOptions.fail): the command's error.
type sourceError struct{ err error }

func (e sourceError) Error() string { return e.err.Error() }
func (e sourceError) Unwrap() error { return e.err }

// readLoop reads the queue with a ReadSize buffer and prints every read.
func (o *watchOptions) readLoop(ctx context.Context, q *watchq.Queue, stdout, capture io.Writer, popts printer.Options) error {
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	popts.Mounts = o.mountPoints
	p := printer.New(out, popts)
	buf := make([]byte, ReadSize)
	seen := 0
	live := 0 // key watches no removal has ended yet
	for _, n := range o.keyWatches {
		live += n
	}
	// emit prints one read and reports whether the command is done.
	emit := func(b []byte) (bool, error) {
		if capture != nil {
			if _, err := capture.Write(b); err != nil {
				return false, fmt.Errorf("capture: %w", err)
			}
		}
		if err := p.Read(b); err != nil {
			return false, fmt.Errorf("queue returned a malformed read: %w", err)
		}
		if err := out.Flush(); err != nil {
			return false, fmt.Errorf("write: %w", err)
		}
		lastGone := false
		for rec := range record.Records(b) {
			seen++
			if rec.IsRemoval() && o.keyWatches[rec.Tag()] > 0 {
				o.keyWatches[rec.Tag()]--
				live--
				lastGone = live == 0 && o.exitOnLastKey
			}
		}
		if lastGone {
			if err := o.ending.Load(); err != nil {
				return true, *err
			}
		}
		return lastGone || (o.count > 0 && seen >= o.count), nil
	}
	for {
		n, err := q.Read(ctx, buf)
		if err != nil {
			if ctx.Err() == nil {
				return fmt.Errorf("read queue: %w", err)
			}
			var se sourceError
			if errors.As(context.Cause(ctx), &se) {
				// Print what the queue still holds (the removal the
				// failed source posted), then fail.
				for {
					n, err := q.TryRead(buf)
					if err != nil {
						break
					}
					if done, err := emit(buf[:n]); done || err != nil {
						return err
					}
				}
				return se.err
			}
			if context.Cause(ctx) == errTimeout && o.count > 0 {
				return fmt.Errorf("timeout after %v: %d of %d records", o.timeout, seen, o.count)
			}
			return nil // interrupted, or --timeout without --count
		}
		if done, err := emit(buf[:n]); done || err != nil {
			return err
		}
	}
}
