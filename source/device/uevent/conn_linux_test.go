//go:build linux

package uevent_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/source/device/uevent"
)

func dial(t *testing.T, cfg uevent.Config) *uevent.Conn {
	t.Helper()
	testenv.RequireRoot(t)
	c, err := uevent.Dial(cfg)
	testenv.SkipIfUnsupported(t, "NETLINK_KOBJECT_UEVENT socket", err)
	t.Cleanup(func() { c.Close() })
	return c
}

// next receives until an event carrying SYNTH_UUID=uuid arrives; other
// kernel events (the machine's own) are skipped. Errors are returned.
func next(t *testing.T, c *uevent.Conn, uuid string) (*uevent.Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	buf := make([]byte, uevent.MaxSize)
	for {
		n, err := c.Receive(ctx, buf)
		if errors.Is(err, uevent.ErrOverrun) && c.ReadBuffer() < 1<<20 {
			// Small-buffer tests: other tests' uevent storms (every
			// listener gets every kernel uevent) may overrun it again.
			continue
		}
		if err != nil {
			return nil, err
		}
		e := new(uevent.Event)
		if err := uevent.Parse(e, buf[:n]); err != nil {
			t.Fatalf("kernel datagram does not parse: %v", err)
		}
		if e.Is("SYNTH_UUID", uuid) {
			return e, nil
		}
	}
}

func TestDialReadBuffer(t *testing.T) {
	c := dial(t, uevent.Config{})
	// SO_RCVBUFFORCE as root: the kernel doubles the value it stores.
	if got := c.ReadBuffer(); got < uevent.DefaultReadBuffer {
		t.Errorf("ReadBuffer = %d, want >= %d (SO_RCVBUFFORCE)", got, uevent.DefaultReadBuffer)
	}
}

func TestReceiveSynthetic(t *testing.T) {
	c := dial(t, uevent.Config{})
	uuid := devtest.UUID()
	if err := devtest.Synth(devtest.NullUevent, "add", uuid, "WQTEST=1"); err != nil {
		t.Fatal(err)
	}
	e, err := next(t, c, uuid)
	if err != nil {
		t.Fatal(err)
	}
	if e.Action != uevent.ActionAdd || !e.Is("SUBSYSTEM", "mem") || !e.Is("SYNTH_ARG_WQTEST", "1") || string(e.Name()) != "null" {
		t.Fatalf("unexpected event %v", e)
	}
}

// TestSpoofedDropped proves, on one listener in a private network
// namespace, that a datagram a userspace process sends to the kernel group
// is dropped as spoofed while a kernel uevent sent right after it is
// accepted. The kernel delivers device uevents to listeners in every
// namespace (uevent_net_broadcast_untagged); the fake one stays in the
// private namespace, so no other listener on the machine sees it.
func TestSpoofedDropped(t *testing.T) {
	ns := devtest.NewNetNS(t)
	c := dial(t, uevent.Config{NetNS: ns})
	sender := dial(t, uevent.Config{NetNS: ns, ReadBuffer: -1})
	fake := "add@/devices/pci0000:00/usb9/9-9\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/usb9/9-9\x00SUBSYSTEM=usb\x00DEVTYPE=usb_device\x00"
	if err := sender.Send(context.Background(), []byte(fake)); err != nil {
		t.Fatal(err)
	}
	uuid := devtest.UUID()
	if err := devtest.Synth(devtest.NullUevent, "change", uuid); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, uevent.MaxSize)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Receive(ctx, buf)
	var se *uevent.SpoofedError
	if !errors.As(err, &se) || !errors.Is(err, uevent.ErrSpoofed) || se.PortID == 0 {
		t.Fatalf("first Receive = %v, want a SpoofedError with a non-zero port id", err)
	}
	if _, err := next(t, c, uuid); err != nil {
		t.Fatalf("kernel uevent after the spoofed one: %v", err)
	}
}

func TestTruncated(t *testing.T) {
	c := dial(t, uevent.Config{})
	uuid := devtest.UUID()
	if err := devtest.Synth(devtest.NullUevent, "change", uuid); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Every uevent header is longer than 8 bytes.
	if _, err := c.Receive(ctx, make([]byte, 8)); !errors.Is(err, uevent.ErrTruncated) {
		t.Fatalf("Receive into 8 bytes = %v, want ErrTruncated", err)
	}
}

// TestOverrun fills a deliberately small receive buffer with a storm of
// synthetic uevents, then checks that Receive reports the overrun with a
// loss count and that the same socket goes on receiving.
func TestOverrun(t *testing.T) {
	c := dial(t, uevent.Config{ReadBuffer: 4096})
	const storm = 200 // each datagram costs ~1 KiB of rmem; 4 KiB holds a few
	for i := range storm {
		if err := devtest.Synth(devtest.NullUevent, "change", devtest.UUID(), fmt.Sprintf("WQSTORM=%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, uevent.MaxSize)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var oe *uevent.OverrunError
	_, err := c.Receive(ctx, buf)
	if !errors.As(err, &oe) || !errors.Is(err, uevent.ErrOverrun) {
		t.Fatalf("first Receive after the storm = %v, want an OverrunError", err)
	}
	if oe.Lost < storm/2 {
		t.Errorf("Lost = %d, want most of %d", oe.Lost, storm)
	}
	// Drain: every storm datagram is either received or counted lost, and
	// the kernel accepts new datagrams only once the queue is empty.
	lost, got := oe.Lost, uint64(0)
	for got+lost < storm {
		n, err := c.Receive(ctx, buf)
		if errors.As(err, &oe) {
			lost += oe.Lost
			continue
		}
		if err != nil {
			t.Fatalf("Receive after the overrun: %v", err)
		}
		if strings.Contains(string(buf[:n]), "WQSTORM=") {
			got++
		}
	}
	uuid := devtest.UUID()
	if err := devtest.Synth(devtest.NullUevent, "change", uuid); err != nil {
		t.Fatal(err)
	}
	if _, err := next(t, c, uuid); err != nil {
		t.Fatalf("the listener stopped working after the overrun: %v", err)
	}
	t.Logf("overrun: %d lost, %d storm datagrams received, then the marker", lost, got)
	// Unrelated uevents on a busy machine may add to the drop count, so
	// the sum may exceed the storm, never fall short of it.
	if got+lost < storm {
		t.Errorf("lost %d + received %d < %d sent", lost, got, storm)
	}
}
