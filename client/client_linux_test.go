package client_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// TestSentinelsThroughClient: the engine's sentinels match under errors.Is
// through the client exactly as in-process, beside the errno.
func TestSentinelsThroughClient(t *testing.T) {
	d := watchqtest.StartDaemon(t, "* watch=usb,0x800001\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, err := c.CreateQueue(ctx, 32)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error, sentinel error, errno syscall.Errno) {
		t.Helper()
		if !errors.Is(err, sentinel) || !errors.Is(err, errno) {
			t.Errorf("%s = %v, want %v (%v)", what, err, sentinel, errno)
		}
	}
	_, err = q.SetSize(ctx, 64)
	check("second SetSize", err, watchq.ErrSizeSet, syscall.EBUSY)
	if errors.Is(err, watchq.ErrWatchExists) {
		t.Error("SetSize's EBUSY matches ErrWatchExists")
	}
	err = q.UnwatchDevices(ctx)
	check("UnwatchDevices without a watch", err, watchq.ErrNoWatch, syscall.EBADSLT)
	err = q.UnwatchPublisher(ctx, 0x800001)
	check("UnwatchPublisher without a watch", err, watchq.ErrNoWatch, syscall.EBADSLT)
	if _, err := q.WatchDevices(ctx, 3); err != nil {
		t.Fatal(err)
	}
	_, err = q.WatchDevices(ctx, 4)
	check("second WatchDevices", err, watchq.ErrWatchExists, syscall.EBUSY)
	if err := q.WatchPublisher(ctx, 0x800001, 1); err != nil {
		t.Fatal(err)
	}
	err = q.WatchPublisher(ctx, 0x800001, 2)
	check("second WatchPublisher", err, watchq.ErrWatchExists, syscall.EBUSY)

	// Records through the client's queue, asserted by watchqtest.
	usb := watchqtest.Rec(record.USBNotification{Name: "1-1"})
	if n := d.Devices.Post(usb); n != 1 {
		t.Fatalf("Post reached %d queues", n)
	}
	watchqtest.Expect(t, q, watchqtest.Rec(record.USBNotification{Tag: 3, Name: "1-1"}))

	q.Close()
	if _, err := q.Next(ctx); !errors.Is(err, watchq.ErrClosed) || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestClientCloseIdempotent(t *testing.T) {
	d := watchqtest.StartDaemon(t, "")
	c, err := client.Dial(context.Background(), d.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}
