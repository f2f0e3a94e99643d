package client_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// stoppableDaemon serves a real daemon.Server on a socket in the test's
// directory until stop is called (or the test ends): stopping closes
// every connection and pipe, as watchqd exiting does.
func stoppableDaemon(t *testing.T) (path string, dev *watchqtest.Devices, stop func()) {
	t.Helper()
	rs, err := policy.Parse(strings.NewReader("* watch=usb\n"), "test.conf", nil)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.New(rs)
	eng := watchq.NewEngine(watchq.Config{Policy: pol})
	dev = watchqtest.NewDevices(eng)
	srv, err := daemon.New(daemon.Config{Engine: eng, Policy: pol, Devices: dev})
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "watchqd.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return path, dev, stop
}

// TestDaemonGone: when the daemon goes away, the records already in the
// pipe are read, then Read, Next, Records and every request return
// ErrDaemonGone, never ErrClosed; a queue or client closed by the program
// reads ErrClosed, never ErrDaemonGone.
func TestDaemonGone(t *testing.T) {
	path, dev, stop := stoppableDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var qs [3]*client.Queue
	for i := range qs {
		if qs[i], err = c.CreateQueue(ctx, 32); err != nil {
			t.Fatal(err)
		}
		if _, err := qs[i].WatchDevices(ctx, 4); err != nil {
			t.Fatal(err)
		}
	}
	usb := watchqtest.Rec(record.USBNotification{Name: "1-1"})
	if n := dev.Post(usb); n != len(qs) {
		t.Fatalf("Post reached %d queues", n)
	}
	for _, q := range qs {
		watchqtest.Expect(t, q, watchqtest.Rec(record.USBNotification{Tag: 4, Name: "1-1"}))
	}
	// One more record, still in the pipes when the daemon goes.
	dev.Post(usb)
	stop()

	gone := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, client.ErrDaemonGone) || errors.Is(err, watchq.ErrClosed) {
			t.Errorf("%s = %v, want ErrDaemonGone and not ErrClosed", what, err)
		}
	}
	if rec, err := qs[0].Next(ctx); err != nil || rec.Type() != record.TypeUSB {
		t.Fatalf("Next = %v, %v; want the record queued before the daemon went", rec, err)
	}
	_, err = qs[0].Next(ctx)
	gone("Next", err)
	buf := make([]byte, 433)
	if _, err := qs[1].Read(ctx, buf); err != nil {
		t.Fatalf("Read = %v; want the record queued before the daemon went", err)
	}
	_, err = qs[1].Read(ctx, buf)
	gone("Read", err)
	var last error
	n := 0
	for _, err := range qs[2].Records(ctx) {
		if err != nil {
			last = err
			break
		}
		n++
	}
	if n != 1 {
		t.Errorf("Records yielded %d records, want 1", n)
	}
	gone("Records", last)
	gone("SetFilter", qs[0].SetFilter(ctx, nil))
	_, err = c.CreateQueue(ctx, 32)
	gone("CreateQueue", err)
	_, err = c.Stats(ctx)
	gone("Stats", err)
	for _, q := range qs {
		if err := q.Close(); err != nil {
			t.Errorf("Close after the daemon went = %v, want nil", err)
		}
	}
}

// TestClosedIsNotGone: the program closing its client makes reads and
// requests ErrClosed, not ErrDaemonGone, though the daemon then closes
// the pipes as it does when it goes away.
func TestClosedIsNotGone(t *testing.T) {
	path, _, _ := stoppableDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.CreateQueue(ctx, 32)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	closed := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, watchq.ErrClosed) || errors.Is(err, client.ErrDaemonGone) {
			t.Errorf("%s = %v, want ErrClosed and not ErrDaemonGone", what, err)
		}
	}
	_, err = q.Next(ctx)
	closed("Next after Client.Close", err)
	closed("SetFilter after Client.Close", q.SetFilter(ctx, nil))
}
