//go:build linux

package watchqd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// parse runs watchqd's command on args with a run function that only
// keeps the options.
func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	var got *Options
	cmd := NewCommand(func(_ context.Context, o *Options) error { got = o; return nil })
	cmd.SetArgs(legacyArgs(cmd.Flags(), args))
	cmd.SetOut(new(strings.Builder))
	cmd.SetErr(new(strings.Builder))
	err := cmd.Execute()
	return got, err
}

// TestFlags: the --flag spellings and the old single-dash ones (the
// units and scripts written before cobra) give the same options; bad
// values are usage errors naming the flag.
func TestFlags(t *testing.T) {
	modern, err := parse(t, "--socket", "/tmp/s", "--config=/tmp/c", "--devices", "off", "--log-level", "debug",
		"--pipe-slots", "8", "--hello-timeout", "1s", "--metrics", "unix:/tmp/m")
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := parse(t, "-socket", "/tmp/s", "-config=/tmp/c", "-devices", "off", "-log-level", "debug",
		"-pipe-slots", "8", "-hello-timeout", "1s", "-metrics", "unix:/tmp/m")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(modern, legacy) {
		t.Errorf("--flags %+v\n-flags %+v", modern, legacy)
	}
	if modern.Socket != "/tmp/s" || modern.Config != "/tmp/c" || modern.PipeSlots != 8 || modern.HelloTimeout != time.Second ||
		modern.LogLevel != slog.LevelDebug || modern.SocketMode != 0o666 || modern.LogFormat != "auto" {
		t.Errorf("options %+v", modern)
	}
	if o, err := parse(t, "-log-json"); err != nil || o.LogFormat != "json" {
		t.Errorf("-log-json: %+v %v", o, err)
	}
	for _, tc := range []struct{ args, want string }{
		{"--socket-mode 999", "--socket-mode"},
		{"--pipe-slots 0", "--pipe-slots 0"},
		{"--devices sometimes", "--devices"},
		{"--log-format xml", "--log-format"},
		{"--metrics 192.0.2.1:9101", "only a loopback address or a Unix socket"},
		{"--metrics 0.0.0.0:9101", "only a loopback address"},
		{"--metrics unix:relative", "unix:/absolute/path"},
		{"--bogus", "unknown flag: --bogus"},
		{"extra", "unexpected arguments"},
	} {
		_, err := parse(t, strings.Fields(tc.args)...)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
	for _, ok := range []string{"127.0.0.1:9101", "[::1]:9101", "localhost:0", "unix:/run/watchq/metrics.sock"} {
		if _, _, err := metricsAddr(ok); err != nil {
			t.Errorf("metricsAddr(%q): %v", ok, err)
		}
	}
}

// TestVersion: --version prints the build's version line and exits 0
// without starting the daemon.
func TestVersion(t *testing.T) {
	var out strings.Builder
	ran := false
	cmd := NewCommand(func(context.Context, *Options) error { ran = true; return nil })
	cmd.SetArgs(legacyArgs(cmd.Flags(), []string{"-version"}))
	cmd.SetOut(&out)
	if err := cmd.Execute(); err != nil || ran || !strings.HasPrefix(out.String(), "watchqd ") || !strings.HasSuffix(out.String(), "\n") {
		t.Errorf("--version: %v, ran %v, printed %q", err, ran, out.String())
	}
}

// TestConfigErrors: a missing config and a bad line are refused with the
// file, the line and watchqd.conf(5) named; through the binary the
// daemon exits 1 with that message.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.conf")
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("# ok\nuser=0 watch=devices\n* watch=floppies\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{missing, "watchqd: config " + missing + ": no such file; write one (watchqd.conf(5)"},
		{bad, "watchqd: config: " + bad + ":3: "},
	} {
		_, err := loadConfig(tc.path)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), "watchqd.conf(5)") {
			t.Errorf("loadConfig(%s) = %v, want %q... naming watchqd.conf(5)", tc.path, err, tc.want)
		}
	}
	p := spawn(t, filepath.Join(dir, "s.sock"), "", "--config", bad)
	p.waitRefusal(t, bad+":3: ")
	if !strings.Contains(p.Log(), "see watchqd.conf(5)") {
		t.Errorf("stderr %q does not point at watchqd.conf(5)", p.Log())
	}
}

// TestJournalHandler: records reach journald's sender with the level's
// syslog priority, the message, and every attribute as an upper-case
// field (groups as prefixes); under the real journal (when its socket
// exists) an entry sent with a unique field is found by journalctl.
func TestJournalHandler(t *testing.T) {
	type entry struct {
		msg  string
		pri  journal.Priority
		vars map[string]string
	}
	var got []entry
	h := &journalHandler{level: slog.LevelDebug, ident: "watchqd", fallback: slog.DiscardHandler,
		send: func(m string, p journal.Priority, v map[string]string) error {
			got = append(got, entry{m, p, v})
			return nil
		}}
	log := slog.New(h).With("uid", 1000)
	log.Debug("d")
	log.Info("watchqd ready", "socket", "/run/watchq/watchqd.sock", "max-clients", 4)
	log.Warn("denied", slog.Group("req", "op", "publish"))
	log.WithGroup("conn").Error("e", "pid", 7)
	want := []entry{
		{"d", journal.PriDebug, map[string]string{"SYSLOG_IDENTIFIER": "watchqd", "UID": "1000"}},
		{"watchqd ready", journal.PriInfo, map[string]string{"SYSLOG_IDENTIFIER": "watchqd", "UID": "1000", "SOCKET": "/run/watchq/watchqd.sock", "MAX_CLIENTS": "4"}},
		{"denied", journal.PriWarning, map[string]string{"SYSLOG_IDENTIFIER": "watchqd", "UID": "1000", "REQ_OP": "publish"}},
		{"e", journal.PriErr, map[string]string{"SYSLOG_IDENTIFIER": "watchqd", "UID": "1000", "CONN_PID": "7"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sent\n%+v\nwant\n%+v", got, want)
	}

	// Without JOURNAL_STREAM or INVOCATION_ID, auto is text.
	t.Setenv("JOURNAL_STREAM", "")
	t.Setenv("INVOCATION_ID", "")
	if _, ok := newLogHandler("auto", slog.LevelInfo, os.Stderr).(*slog.TextHandler); !ok {
		t.Error("auto outside systemd is not text")
	}
	// JOURNAL_STREAM naming stderr's device and inode selects the journal.
	var st syscallStat
	if err := fstat(2, &st); err == nil {
		t.Setenv("JOURNAL_STREAM", st.String())
		if _, ok := newLogHandler("auto", slog.LevelInfo, os.Stderr).(*journalHandler); !ok {
			t.Errorf("JOURNAL_STREAM=%s (stderr) did not select the journal", st)
		}
		t.Setenv("JOURNAL_STREAM", "1:1")
		if _, ok := newLogHandler("auto", slog.LevelInfo, os.Stderr).(*journalHandler); ok {
			t.Error("a JOURNAL_STREAM that is not stderr selected the journal")
		}
	}
}

// syscallStat is a file's device and inode, as JOURNAL_STREAM writes them.
type syscallStat struct{ dev, ino uint64 }

func (s syscallStat) String() string { return fmt.Sprintf("%d:%d", s.dev, s.ino) }

func fstat(fd int, s *syscallStat) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	s.dev, s.ino = uint64(st.Dev), st.Ino
	return nil
}
