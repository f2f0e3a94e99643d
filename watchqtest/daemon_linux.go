package watchqtest

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/policy"
)

// Daemon is an in-process watchqd for testing clients: a daemon.Server on a
// socket in the test's temporary directory, with the real engine and
// policy and a Devices source the test posts to.
type Daemon struct {
	Path    string         // the socket, for client.Dial
	Server  *daemon.Server // the server
	Policy  *policy.Policy // its policy; Set replaces the rules, as SIGHUP does
	Devices *Devices       // its device source
	Engine  *watchq.Engine // its engine
}

// StartDaemon runs a watchqd server with rules (watchqd.conf(5) text) until
// the test ends. Peers are identified by SO_PEERCRED as in watchqd, so the
// rules apply to the test's own uid.
func StartDaemon(tb testing.TB, rules string) *Daemon {
	tb.Helper()
	rs, err := policy.Parse(strings.NewReader(rules), "watchqtest.conf", nil)
	if err != nil {
		tb.Fatalf("watchqtest: rules: %v", err)
	}
	pol := policy.New(rs)
	eng := watchq.NewEngine(watchq.Config{Policy: pol, Counter: pol})
	dev := NewDevices(eng)
	srv, err := daemon.New(daemon.Config{Engine: eng, Policy: pol, Devices: dev})
	if err != nil {
		tb.Fatalf("watchqtest: %v", err)
	}
	path := filepath.Join(tb.TempDir(), "watchqd.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		tb.Fatalf("watchqtest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("watchqtest: Serve: %v", err)
		}
	})
	return &Daemon{Path: path, Server: srv, Policy: pol, Devices: dev, Engine: eng}
}
