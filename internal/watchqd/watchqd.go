// Package watchqd is watchqd's command: flags, logging, signals, systemd
// notification and the listening socket around a daemon.Server.
// cmd/watchqd is its main; the daemon's tests run it as a real process.
package watchqd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/source/device"
)

// Defaults for watchqd's flags.
const (
	DefaultConfig = "/etc/watchq/watchqd.conf"
)

// Options are watchqd's command-line settings.
type Options struct {
	Socket     string // socket path, unless systemd passes a socket
	SocketMode uint32 // permission bits of a socket watchqd creates
	Config     string // watchqd.conf(5) path
	Devices    string // "auto", "on" or "off"
	MaxClients int
	MaxQueues  int
	// MaxTotalQueues and MaxTotalPages bound all users' queues and pages
	// together; per-user limits are watchqd.conf's.
	MaxTotalQueues int
	MaxTotalPages  int
	PipeSlots      int
	HelloTimeout   time.Duration
	RequestTimeout time.Duration
	LogLevel       slog.Level
	LogJSON        bool
}

// ParseFlags parses watchqd's command line.
func ParseFlags(args []string, stderr io.Writer) (*Options, error) {
	o := &Options{}
	fs := flag.NewFlagSet("watchqd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Socket, "socket", protocol.DefaultSocket, "`path` of the control socket (ignored under systemd socket activation); its directory must be writable by root or watchqd's user only, and PATH.lock is watchqd's lock")
	mode := fs.String("socket-mode", "0666", "permission `bits` of the socket watchqd creates (the policy, not the mode, decides access)")
	fs.StringVar(&o.Config, "config", DefaultConfig, "policy configuration `file`, see watchqd.conf(5)")
	fs.StringVar(&o.Devices, "devices", "auto", "device source: on (required), off, or auto (used when it opens)")
	fs.IntVar(&o.MaxClients, "max-clients", 1024, "most concurrent clients, all users together (per user: watchqd.conf limits)")
	fs.IntVar(&o.MaxQueues, "max-queues", 16, "most queues per client connection")
	fs.IntVar(&o.MaxTotalQueues, "max-total-queues", 16384, "most queues, all users together")
	fs.IntVar(&o.MaxTotalPages, "max-total-pages", 1<<18, "most pages of queue rings and pipes, all users together")
	fs.IntVar(&o.PipeSlots, "pipe-slots", 32, "records each client pipe holds (one page each)")
	fs.DurationVar(&o.HelloTimeout, "hello-timeout", 5*time.Second, "how long a new connection has to say hello")
	fs.DurationVar(&o.RequestTimeout, "request-timeout", 10*time.Second, "how long a reply may wait for a client that does not read")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&o.LogJSON, "log-json", false, "log JSON lines instead of text")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("watchqd: unexpected arguments %q", fs.Args())
	}
	m, err := strconv.ParseUint(*mode, 8, 32)
	if err != nil || m > 0o777 {
		return nil, fmt.Errorf("watchqd: -socket-mode %q: want octal permission bits", *mode)
	}
	o.SocketMode = uint32(m)
	for _, f := range []struct {
		name string
		v    int
	}{{"max-clients", o.MaxClients}, {"max-queues", o.MaxQueues}, {"max-total-queues", o.MaxTotalQueues},
		{"max-total-pages", o.MaxTotalPages}, {"pipe-slots", o.PipeSlots}} {
		if f.v < 1 {
			return nil, fmt.Errorf("watchqd: -%s %d: want at least 1", f.name, f.v)
		}
	}
	if o.PipeSlots > 256 {
		return nil, fmt.Errorf("watchqd: -pipe-slots %d: want at most 256", o.PipeSlots)
	}
	if o.HelloTimeout <= 0 || o.RequestTimeout <= 0 {
		return nil, errors.New("watchqd: -hello-timeout and -request-timeout must be positive")
	}
	if err := o.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, fmt.Errorf("watchqd: -log-level: %w", err)
	}
	switch o.Devices {
	case "auto", "on", "off":
	default:
		return nil, fmt.Errorf("watchqd: -devices %q: want auto, on or off", o.Devices)
	}
	return o, nil
}

// Main is watchqd's main function: it parses args, runs the daemon until
// SIGINT or SIGTERM, and returns the exit status.
func Main(args []string) int {
	o, err := ParseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// Run runs watchqd with o until ctx ends: it loads the policy, opens the
// device source, listens (or takes systemd's socket), tells systemd it is
// ready, reloads the policy on SIGHUP, and on the way out closes every
// client.
func Run(ctx context.Context, o *Options) error {
	var h slog.Handler
	hopts := &slog.HandlerOptions{Level: o.LogLevel}
	if o.LogJSON {
		h = slog.NewJSONHandler(os.Stderr, hopts)
	} else {
		h = slog.NewTextHandler(os.Stderr, hopts)
	}
	log := slog.New(h)

	rules, err := policy.Load(o.Config)
	if err != nil {
		return fmt.Errorf("watchqd: %w", err)
	}
	pol := policy.New(rules)
	// The daemon charges watches to uids under watchqd.conf's limits;
	// the engine's own per-user bound is only the ceiling behind them.
	eng := watchq.NewEngine(watchq.Config{Policy: pol, MaxWatchesPerUser: policy.MaxLimits().Watches})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var devices daemon.DeviceSource
	if o.Devices != "off" {
		src, err := device.Open(ctx, device.Config{Engine: eng})
		switch {
		case err != nil && o.Devices == "on":
			return fmt.Errorf("watchqd: device source: %w", err)
		case err != nil:
			log.Warn("running without the device source", "err", err)
		default:
			defer src.Close()
			devices = src
			c := src.Capabilities()
			log.Info("device source", "uevents", errString(c.Uevents), "block_errors", errString(c.BlockErrors), "usb_reset", errString(c.USBReset))
		}
	}

	srv, err := daemon.New(daemon.Config{Engine: eng, Policy: pol, Devices: devices, Logger: log,
		Keys: openKeys(ctx, eng, log), Mounts: newMountSource(ctx, eng, log),
		MaxClients: o.MaxClients, MaxQueues: o.MaxQueues, MaxTotalQueues: o.MaxTotalQueues, MaxTotalPages: o.MaxTotalPages,
		PipeSlots: o.PipeSlots, HelloTimeout: o.HelloTimeout, RequestTimeout: o.RequestTimeout})
	if err != nil {
		return err
	}
	l, remove, err := listen(o, log)
	if err != nil {
		return err
	}
	if remove != nil {
		defer func() {
			if rerr := remove(); rerr != nil {
				log.Error("removing the socket", "err", rerr)
			}
		}()
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				sddaemon.SdNotify(false, sddaemon.SdNotifyReloading)
				rs, err := policy.Load(o.Config)
				if err != nil {
					log.Error("reload failed; keeping the rules in force", "err", err)
				} else {
					pol.Set(rs)
					log.Info("policy reloaded", "config", o.Config, "rules", rs.Len())
				}
				sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
			}
		}
	}()

	log.Info("watchqd ready", "socket", l.Addr().String(), "config", o.Config, "rules", rules.Len(), "devices", devices != nil)
	sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	err = srv.Serve(ctx, l)
	sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	return err
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// listen returns systemd's socket when activated, else a new
// SOCK_SEQPACKET socket at o.Socket, created as socket.go describes, and
// its remove function, which Run calls once Serve has returned (nil for
// systemd's socket: systemd owns it).
func listen(o *Options, log *slog.Logger) (*net.UnixListener, func() error, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, nil, fmt.Errorf("watchqd: socket activation: %w", err)
	}
	for _, l := range ls {
		if ul, ok := l.(*net.UnixListener); ok && ul.Addr().Network() == "unixpacket" {
			log.Debug("socket from systemd", "addr", ul.Addr().String())
			return ul, nil, nil
		}
	}
	if len(ls) > 0 {
		return nil, nil, errors.New("watchqd: systemd passed no SOCK_SEQPACKET Unix socket (want ListenSequentialPacket=)")
	}
	s, err := createSocket(o.Socket, o.SocketMode, log)
	if err != nil {
		return nil, nil, err
	}
	return s.l, s.Close, nil
}
