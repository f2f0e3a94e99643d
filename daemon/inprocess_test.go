//go:build linux

package daemon_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/record"
)

// fakeDevices is a device source without the kernel: a real engine watch
// list of kind KindDevices that the test posts to.
type fakeDevices struct{ wl *watchq.WatchList }

func (f fakeDevices) Watch(q *watchq.Queue, tag record.Tag, w *watchq.Cred) error {
	return f.wl.Add(q, 0, tag, w)
}

func (f fakeDevices) Unwatch(q *watchq.Queue) error { return f.wl.Remove(q, 0) }

type inproc struct {
	srv  *daemon.Server
	pol  *policy.Policy
	dev  fakeDevices
	path string
}

// startInProcess runs a Server in this process on a socket in a temporary
// directory, with rules as its configuration.
func startInProcess(tb testing.TB, rules string) *inproc {
	tb.Helper()
	rs, err := policy.Parse(strings.NewReader(rules), "test.conf", nil)
	if err != nil {
		tb.Fatal(err)
	}
	pol := policy.New(rs)
	eng := watchq.NewEngine(watchq.Config{Policy: pol})
	dev := fakeDevices{eng.NewWatchList(watchq.Object{Kind: watchq.KindDevices})}
	srv, err := daemon.New(daemon.Config{Engine: eng, Policy: pol, Devices: dev})
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "watchqd.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return &inproc{srv: srv, pol: pol, dev: dev, path: path}
}

func blockErrorRecord(sub uint8, sector uint64) []byte {
	b, _ := record.BlockNotification{Subtype: sub, Dev: record.KernelDev(7, 0), Sector: sector}.AppendBinary(nil)
	return b
}

func usbRecord(name string) []byte {
	b, _ := record.USBNotification{Subtype: record.USBDeviceAdd, Name: name}.AppendBinary(nil)
	return b
}

func TestInProcessRoundTrip(t *testing.T) {
	ip := startInProcess(t, "* watch=block-errors,0x800001 publish=0x800001\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, ip.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.SetSize(ctx, 40); err != nil {
		t.Fatal(err)
	}
	if _, err := q.SetSize(ctx, 40); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("second SetSize = %v, want EBUSY", err)
	}
	src, err := q.WatchDevices(ctx, 7)
	if err != nil || src != client.SourceBlockErrors {
		t.Fatalf("WatchDevices = %v, %v", src, err)
	}
	if err := q.WatchPublisher(ctx, 0x800001, 9); err != nil {
		t.Fatal(err)
	}
	ip.dev.wl.Post(usbRecord("3-7.7"), watchq.SystemCred, 0) // class not granted
	ip.dev.wl.Post(blockErrorRecord(record.BlockErrorIO, 1024), watchq.SystemCred, 0)
	rec := record.Record{0x01, 0x00, 0x80, 0x05, 12, 0, 0, 0, 'a', 'b', 'c', 'd'}
	if err := c.Publish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	r, err := q.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Block()
	if err != nil || b.Sector != 1024 || r.Tag() != 7 {
		t.Fatalf("first record %v: %+v %v", r, b, err)
	}
	r, err = q.Next(ctx)
	if err != nil || r.Type() != 0x800001 || r.Subtype() != 5 || r.Tag() != 9 || string(r[8:]) != "abcd" {
		t.Fatalf("second record %v %v", r, err)
	}
	if err := q.UnwatchDevices(ctx); err != nil {
		t.Fatal(err)
	}
	r, err = q.Next(ctx)
	if err != nil || !r.IsRemoval() || r.Tag() != 7 {
		t.Fatalf("removal record %v %v", r, err)
	}
	if err := q.UnwatchDevices(ctx); !errors.Is(err, syscall.EBADSLT) {
		t.Fatalf("second removal = %v, want EBADSLT", err)
	}
	// The pump counts a record after writing it: poll.
	for {
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Written == 3 && st.Posted == 3 && st.Denied == 1 && st.Watches == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("stats %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
