//go:build linux

package daemon_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// startInProcess runs a Server in this process on a socket in a temporary
// directory, with rules as its configuration and a watchqtest.Devices
// source the test posts to.
func startInProcess(tb testing.TB, rules string) *watchqtest.Daemon {
	return watchqtest.StartDaemon(tb, rules)
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
	c, err := client.Dial(ctx, ip.Path)
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
	ip.Devices.Post(usbRecord("3-7.7")) // class not granted
	ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, 1024))
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

// deviceQueue dials d as a client (closed with tb), makes a queue with
// create and watches the device list on it with tag.
func deviceQueue(tb testing.TB, ctx context.Context, d *watchqtest.Daemon, create newQueue, tag record.Tag) (*client.Client, *client.Queue) {
	tb.Helper()
	c, err := client.Dial(ctx, d.Path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	q, err := create(ctx, c)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := q.WatchDevices(ctx, tag); err != nil {
		tb.Fatal(err)
	}
	return c, q
}
