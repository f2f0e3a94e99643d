package watchqd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/internal/version"
)

// Exit statuses, as watchq's (internal/cli).
const (
	ExitOK    = 0 // stopped by SIGINT or SIGTERM, or --help, --version
	ExitError = 1 // the daemon failed to start or to run
	ExitUsage = 2 // bad flags or arguments
)

// usageError marks an error in the command line itself.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// NewCommand returns watchqd's command, on the same flag library and in
// the same --flag style as watchq; run is called with the parsed options.
func NewCommand(run func(context.Context, *Options) error) *cobra.Command {
	o := &Options{}
	var mode, level string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "watchqd",
		Short: "Hand out notification queues as pipes, under policy",
		Long: `watchqd gives any local process a notification queue in the manner of
Linux's general notification queue (watch_queue): the client receives the
read end of a packet-mode pipe on which every read(2) returns one whole
record in the kernel's struct watch_notification layout. Records come from
the device source (uevents, block I/O errors, USB resets) and from
authorised publishers, under the policy of watchqd.conf(5).

Under systemd (watchqd.socket, watchqd.service) it takes the socket systemd
passes, reports readiness and reloads with SIGHUP, and logs to the journal
with priorities; elsewhere it logs text to standard error. See watchqd(8).`,
		Example: `  watchqd --config /etc/watchq/watchqd.conf
  watchqd --socket /tmp/watchqd.sock --config ./watchqd.conf --devices off --log-level debug
  watchqd --metrics 127.0.0.1:9101`,
		Args:          func(_ *cobra.Command, args []string) error { return noArgs(args) },
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version.String("watchqd"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.finish(cmd.Flags(), mode, level, logJSON); err != nil {
				return usageError{err}
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.SetVersionTemplate("{{.Version}}\n")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.Socket, "socket", protocol.DefaultSocket, "`path` of the control socket (ignored under systemd socket activation); its directory must be writable by root or watchqd's user only, and PATH.lock is watchqd's lock")
	f.StringVar(&mode, "socket-mode", "0666", "permission `bits` of the socket watchqd creates (the policy, not the mode, decides access)")
	f.StringVar(&o.Config, "config", DefaultConfig, "policy configuration `file`, see watchqd.conf(5)")
	f.StringVar(&o.Devices, "devices", "auto", "device source: on (required), off, or auto (used when it opens)")
	f.IntVar(&o.MaxClients, "max-clients", 1024, "most concurrent clients, all users together (per user: watchqd.conf limits)")
	f.IntVar(&o.MaxQueues, "max-queues", 16, "most queues per client connection")
	f.IntVar(&o.MaxTotalQueues, "max-total-queues", 16384, "most queues, all users together")
	f.IntVar(&o.MaxTotalPages, "max-total-pages", 1<<18, "most pages of queue rings and pipes, all users together")
	f.IntVar(&o.PipeSlots, "pipe-slots", 32, "records each client pipe holds (one page each)")
	f.DurationVar(&o.HelloTimeout, "hello-timeout", 5*time.Second, "how long a new connection has to say hello")
	f.DurationVar(&o.RequestTimeout, "request-timeout", 10*time.Second, "how long a reply may wait for a client that does not read")
	f.StringVar(&level, "log-level", "info", "log `level`: debug, info, warn, error")
	f.StringVar(&o.LogFormat, "log-format", "auto", "log `format`: auto (the journal when started by systemd, else text), text, json, journal")
	f.BoolVar(&logJSON, "log-json", false, "log JSON lines (--log-format json)")
	f.StringVar(&o.Metrics, "metrics", "", "serve Prometheus metrics at `addr`: unix:/path or a loopback host:port such as 127.0.0.1:9101 (off by default)")
	f.MarkHidden("log-json")
	return cmd
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", args)}
	}
	return nil
}

// finish checks the parsed flags and fills in what needs converting.
func (o *Options) finish(f *pflag.FlagSet, mode, level string, logJSON bool) error {
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || m > 0o777 {
		return fmt.Errorf("--socket-mode %q: want octal permission bits", mode)
	}
	o.SocketMode = uint32(m)
	for _, name := range []string{"max-clients", "max-queues", "max-total-queues", "max-total-pages", "pipe-slots"} {
		if v, _ := f.GetInt(name); v < 1 {
			return fmt.Errorf("--%s %d: want at least 1", name, v)
		}
	}
	if o.PipeSlots > 256 {
		return fmt.Errorf("--pipe-slots %d: want at most 256", o.PipeSlots)
	}
	if o.HelloTimeout <= 0 || o.RequestTimeout <= 0 {
		return errors.New("--hello-timeout and --request-timeout must be positive")
	}
	if err := o.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if logJSON {
		o.LogFormat = "json"
	}
	switch o.LogFormat {
	case "auto", "text", "json", "journal":
	default:
		return fmt.Errorf("--log-format %q: want auto, text, json or journal", o.LogFormat)
	}
	switch o.Devices {
	case "auto", "on", "off":
	default:
		return fmt.Errorf("--devices %q: want auto, on or off", o.Devices)
	}
	if o.Metrics != "" {
		if _, _, err := metricsAddr(o.Metrics); err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
	}
	return nil
}

// legacyArgs rewrites the single-dash long flags of watchqd before it
// moved to cobra ("-config FILE", "-devices=off") to their "--" spelling,
// so that old units and scripts keep working. Only names of long flags
// are rewritten; anything after "--" is left alone.
func legacyArgs(f *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if f.Lookup(name) != nil || name == "help" || name == "version" {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

// Main is watchqd's main function: it parses args, runs the daemon until
// SIGINT or SIGTERM, and returns the exit status (ExitOK...).
func Main(args []string) int {
	// The signal is the context's cause: the stop line gives it as the
	// reason.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case sig := <-sigs:
			cancel(fmt.Errorf("signal %v", sig))
		case <-ctx.Done():
		}
	}()
	cmd := NewCommand(Run)
	cmd.SetArgs(legacyArgs(cmd.Flags(), args))
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(os.Stderr, "watchqd: %s\n", strings.TrimPrefix(err.Error(), "watchqd: "))
	if errors.As(err, new(usageError)) {
		fmt.Fprintln(os.Stderr, "Run 'watchqd --help' for usage.")
		return ExitUsage
	}
	return ExitError
}
