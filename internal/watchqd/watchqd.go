// Package watchqd is watchqd's command: flags, logging, signals, systemd
// notification and the listening socket around a daemon.Server.
// cmd/watchqd is its main; the daemon's tests run it as a real process.
package watchqd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/internal/version"
	"github.com/watchq/watchq/source/device"
)

// Defaults for watchqd's flags.
const (
	DefaultConfig = "/etc/watchq/watchqd.conf"
)

// Options are watchqd's command-line settings (command.go parses them).
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
	// LogFormat is "auto" (the journal when started by systemd, else
	// text), "text", "json" or "journal".
	LogFormat string
	// Metrics is the Prometheus endpoint's address ("unix:/path" or a
	// loopback host:port); "" serves none.
	Metrics string
}

// Run runs watchqd with o until ctx ends: it loads the policy, opens the
// device source, listens (or takes systemd's socket), tells systemd it is
// ready, reloads the policy on SIGHUP, and on the way out closes every
// client.
func Run(ctx context.Context, o *Options) error {
	started := time.Now()
	log := slog.New(newLogHandler(o.LogFormat, o.LogLevel, os.Stderr))

	rules, err := loadConfig(o.Config)
	if err != nil {
		return err
	}
	pol := policy.New(rules)
	// The daemon charges watches to uids under watchqd.conf's limits;
	// the engine's own per-user bound is only the ceiling behind them.
	eng := watchq.NewEngine(watchq.Config{Policy: pol, Counter: pol, MaxWatchesPerUser: policy.MaxLimits().Watches})

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

	keySrc := openKeys(ctx, eng, log)
	cfg := daemon.Config{Engine: eng, Policy: pol, Devices: devices, Logger: log,
		Mounts:     newMountSource(ctx, eng, log),
		MaxClients: o.MaxClients, MaxQueues: o.MaxQueues, MaxTotalQueues: o.MaxTotalQueues, MaxTotalPages: o.MaxTotalPages,
		PipeSlots: o.PipeSlots, HelloTimeout: o.HelloTimeout, RequestTimeout: o.RequestTimeout}
	keyConfig(&cfg, keySrc)
	srv, err := daemon.New(cfg)
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
				rs, err := loadConfig(o.Config)
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

	if o.Metrics != "" {
		stopMetrics, err := serveMetrics(ctx, o.Metrics, srv, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	// sources names what serves watches besides the publishers: the
	// device source, the key source with its backend, the mount sources
	// (opened per client namespace on demand).
	var srcNames []string
	if devices != nil {
		srcNames = append(srcNames, "device")
	}
	if keySrc != nil {
		srcNames = append(srcNames, "keys:"+keySrc.Backend().String())
	}
	srcNames = append(srcNames, "mounts")
	sources := strings.Join(srcNames, ",")
	log.Info("watchqd ready", "version", version.String("watchqd"), "socket", l.Addr().String(), "config", o.Config,
		"rules", rules.Len(), "devices", devices != nil, "sources", sources, "metrics", o.Metrics)
	sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	err = srv.Serve(ctx, l)
	sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	reason := "stopped"
	if cause := context.Cause(ctx); cause != nil {
		reason = cause.Error()
	}
	if err != nil {
		reason = err.Error()
	}
	st := srv.Stats()
	log.Info("watchqd stopping", "reason", reason, "uptime", time.Since(started).Round(time.Millisecond).String(),
		"clients", st.Clients, "queues", st.Queues, "published", st.Published, "refused", st.Refused)
	return err
}

// loadConfig loads watchqd.conf(5) from path. Its errors name the file,
// the line where there is one (policy.Parse's "file:line: ..."), and the
// manual page.
func loadConfig(path string) (*policy.Rules, error) {
	rs, err := policy.Load(path)
	switch {
	case err == nil:
		return rs, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("watchqd: config %s: no such file; write one (watchqd.conf(5); make install ships a default) or name another with --config", path)
	}
	return nil, fmt.Errorf("watchqd: config: %s; see watchqd.conf(5)", strings.TrimPrefix(err.Error(), "policy: "))
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
