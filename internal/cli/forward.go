package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq/fleet"
)

func newForwardCommand() *cobra.Command {
	var (
		to, backlog  string
		classes      []string
		nf           natsFlags
		cfg          fleet.Config
		createStream bool
	)
	cmd := &cobra.Command{
		Use:   "forward --to URL --class CLASS[,CLASS...]",
		Short: "Forward this host's records from watchqd to a NATS JetStream stream",
		Long: `Forward connects to watchqd as an ordinary client -- the daemon's policy
decides what it may watch, as for any client -- and publishes every record
of the chosen classes to a NATS JetStream stream, one message per record
carrying the record's exact bytes, on the subject

    PREFIX.HOST.CLASS      e.g. watchq.web1.block.error

with the headers Watchq-Host, Watchq-Boot (the kernel's boot id),
Watchq-Seq (this host's sequence number) and Watchq-Time, and Nats-Msg-Id
HOST/BOOT/SEQ, so that the stream's duplicate window drops a record
published twice.

Classes (--class, repeatable or comma-separated): usb, block-errors,
block-lifecycle, and publisher types (0x800000..0xffffff).

Every record is written to the backlog in --dir before it is published.
While the servers cannot be reached the backlog grows, up to --backlog
bytes, and is published in order when they can be reached again. Past the
bound, records are counted, not kept, and one loss record with the exact
count (header Watchq-Lost) takes their place in the stream; losses in the
forwarder's own watchqd queue are published as loss records too. Started
again, forward goes on after the last record the stream acknowledged.

Nothing is sent anywhere unless --to names the servers. Forward runs until
SIGINT or SIGTERM. docs/fleet.md describes the guarantees and sizing.`,
		Example: `  watchq forward --to nats://nats.example.com:4222 --class block-errors,usb
  watchq forward --to tls://nats.example.com:4222 --tls-ca /etc/watchq/ca.pem \
      --creds /etc/watchq/forward.creds --class block-errors --class 0x800001`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return usageError{errors.New("--to is required: nothing is sent unless it names the NATS servers")}
			}
			if err := checkURL("to", to); err != nil {
				return err
			}
			if len(classes) == 0 {
				return usageError{errors.New("--class is required: usb, block-errors, block-lifecycle or a publisher type")}
			}
			for _, s := range classes {
				c, err := fleet.ParseClass(s)
				if err != nil {
					return usageError{err}
				}
				switch {
				case c == fleet.ClassUSB || c == fleet.ClassBlockError || c == fleet.ClassBlockLifecycle:
					cfg.Devices = append(cfg.Devices, c)
				case c.IsPublisherType():
					t, _ := c.PublisherType()
					cfg.Publishers = append(cfg.Publishers, t)
				default:
					return usageError{fmt.Errorf("--class %s: forward takes usb, block-errors, block-lifecycle or publisher type numbers", s)}
				}
			}
			b, err := parseBytes(backlog)
			if err != nil {
				return usageError{fmt.Errorf("--backlog: %w", err)}
			}
			cfg.Backlog = b
			if cfg.NATS, err = nf.config(to, "watchq forward"); err != nil {
				return err
			}
			cfg.CreateStream = createStream
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			f, err := fleet.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = f.Run(ctx)
			s := f.Stats()
			cfg.Logger.Info("fleet: stopped", "spooled", s.Spooled, "acked", s.Acked, "dropped", s.Dropped, "queue_lost", s.QueueLost)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "NATS server `URL`s, comma-separated (nats://HOST:4222, tls://HOST:4222); required")
	f.StringSliceVar(&classes, "class", nil, "record `classes` to forward: usb, block-errors, block-lifecycle, publisher types (repeatable)")
	f.StringVar(&cfg.Socket, "socket", defaultSocket(), "watchqd daemon socket `path`")
	f.IntVar(&cfg.QueueSize, "queue-size", fleet.DefaultQueueSize, "the watchqd queue's size in `notes` (1..512)")
	f.StringVar(&cfg.Dir, "dir", fleet.DefaultDir, "backlog `directory`")
	f.StringVar(&backlog, "backlog", "64M", "bound on the backlog's size on disk (`bytes`, K, M or G)")
	f.StringVar(&cfg.Host, "host", "", "this host's `name` in subjects and headers (default: the host name)")
	f.StringVar(&cfg.BootID, "boot-id", "", "boot `id` in headers (default: /proc/sys/kernel/random/boot_id)")
	f.StringVar(&cfg.Prefix, "prefix", fleet.DefaultPrefix, "first `token` of every subject")
	f.StringVar(&cfg.Stream, "stream", fleet.DefaultStream, "JetStream stream `name` the subjects belong to")
	f.BoolVar(&createStream, "create-stream", false, "create the stream if it does not exist (file storage, subjects PREFIX.>, 2 min duplicate window)")
	f.IntVar(&cfg.Window, "window", fleet.DefaultWindow, "messages published ahead of their acknowledgements")
	f.DurationVar(&cfg.AckTimeout, "ack-timeout", fleet.DefaultAckTimeout, "publish again from the first unacknowledged record after this long without its acknowledgement")
	nf.add(cmd)
	_ = cmd.RegisterFlagCompletionFunc("class", cobra.FixedCompletions([]string{"usb", "block-errors", "block-lifecycle"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
