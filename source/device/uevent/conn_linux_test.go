//go:build linux

package uevent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq"
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

// alive proves that a small-buffer c still receives: it makes a uevent
// every 100 ms until one of them arrives (within 10 s). One marker is not
// enough on a busy machine: other tests' storms (every listener gets every
// kernel uevent) may overrun the buffer again and drop it.
func alive(c *uevent.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	buf := make([]byte, uevent.MaxSize)
	sent := make(map[string]bool)
	var e uevent.Event
	for {
		uuid := devtest.UUID()
		if err := devtest.Synth(devtest.NullUevent, "change", uuid); err != nil {
			return err
		}
		sent[uuid] = true
		tick, cancelTick := context.WithTimeout(ctx, 100*time.Millisecond)
		for {
			n, err := c.Receive(tick, buf)
			if errors.Is(err, uevent.ErrOverrun) {
				continue
			}
			if err != nil {
				break
			}
			if uevent.Parse(&e, buf[:n]) == nil {
				if v := e.Get("SYNTH_UUID"); v != nil && sent[string(v)] {
					cancelTick()
					return nil
				}
			}
		}
		cancelTick()
		if ctx.Err() != nil {
			return fmt.Errorf("none of %d uevents arrived: %w", len(sent), ctx.Err())
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
	if err := alive(c); err != nil {
		t.Fatalf("the listener stopped working after the overrun: %v", err)
	}
	t.Logf("overrun: %d lost, %d storm datagrams received, then the marker", lost, got)
	// Unrelated uevents on a busy machine may add to the drop count, so
	// the sum may exceed the storm, never fall short of it.
	if got+lost < storm {
		t.Errorf("lost %d + received %d < %d sent", lost, got, storm)
	}
}

// TestOverrunMidStorm reads the overrun while the storm is still going:
// the kernel keeps dropping (the socket stays congested until its queue
// drains) after the OverrunError was returned, and those later drops must
// be reported too, once the queue has drained, without another datagram
// arriving to prompt it.
func TestOverrunMidStorm(t *testing.T) {
	c := dial(t, uevent.Config{ReadBuffer: 4096})
	const first, second = 50, 150
	synth := func(from, to int) {
		for i := from; i < to; i++ {
			if err := devtest.Synth(devtest.NullUevent, "change", devtest.UUID(), fmt.Sprintf("WQSTORM=%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	synth(0, first)
	buf := make([]byte, uevent.MaxSize)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var oe *uevent.OverrunError
	_, err := c.Receive(ctx, buf)
	if !errors.As(err, &oe) {
		t.Fatalf("first Receive after %d = %v, want an OverrunError", first, err)
	}
	lost, got := oe.Lost, uint64(0)
	// The queue is still full and the socket congested: all of these are
	// dropped after the overrun was reported.
	synth(first, first+second)
	for got+lost < first+second {
		n, err := c.Receive(ctx, buf)
		if errors.As(err, &oe) {
			if oe.Lost == 0 {
				t.Errorf("OverrunError with Lost 0")
			}
			lost += oe.Lost
			continue
		}
		if err != nil {
			t.Fatalf("after %d lost + %d received of %d: %v", lost, got, first+second, err)
		}
		if strings.Contains(string(buf[:n]), "WQSTORM=") {
			got++
		}
	}
	t.Logf("%d lost, %d received", lost, got)
}

// TestReceiveAllocs: with a ctx that is never cancelled, Receive does not
// allocate, in an overrun episode (reading SO_MEMINFO after each datagram)
// as outside one.
func TestReceiveAllocs(t *testing.T) {
	for _, rb := range []int{0, 4096} {
		c := dial(t, uevent.Config{ReadBuffer: rb})
		for i := range 200 {
			if err := devtest.Synth(devtest.NullUevent, "change", devtest.UUID(), fmt.Sprintf("WQALLOC=%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		buf := make([]byte, uevent.MaxSize)
		ctx := context.Background()
		if rb != 0 {
			// Take the ENOBUFS report; the watch then reads SO_MEMINFO
			// after every datagram.
			if _, err := c.Receive(ctx, buf); !errors.Is(err, uevent.ErrOverrun) {
				t.Fatalf("first Receive = %v, want an overrun", err)
			}
		}
		if n := testing.AllocsPerRun(5, func() {
			if _, err := c.Receive(ctx, buf); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("ReadBuffer %d: Receive allocates %.1f times per datagram", rb, n)
		}
	}
}

// TestSettleDeadlines: after an overrun episode drained, Receive checks the
// drop count again on timers; those wakeups never surface as errors, and
// the caller's own deadlines (ctx's or SetReadDeadline's) still apply.
func TestSettleDeadlines(t *testing.T) {
	c := dial(t, uevent.Config{ReadBuffer: 4096})
	const storm = 100
	for i := range storm {
		if err := devtest.Synth(devtest.NullUevent, "change", devtest.UUID(), fmt.Sprintf("WQSTORM=%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, uevent.MaxSize)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		oe        *uevent.OverrunError
		lost, got uint64
	)
	for got+lost < storm {
		n, err := c.Receive(ctx, buf)
		if errors.As(err, &oe) {
			lost += oe.Lost
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(buf[:n]), "WQSTORM=") {
			got++
		}
	}
	// The settle checks are pending. A caller's deadline before them wins.
	// Every listener gets every uevent of the machine: a datagram (n > 0)
	// that comes meanwhile is skipped, but a settle wakeup must never
	// surface, as an error or as an empty success.
	receiveErr := func(ctx context.Context) error {
		for {
			n, err := c.Receive(ctx, buf)
			if err != nil || n == 0 {
				return err
			}
		}
	}
	start := time.Now()
	if err := c.SetReadDeadline(start.Add(5 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := receiveErr(context.Background()); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Receive past SetReadDeadline = %v, want ErrDeadlineExceeded", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	// A short ctx deadline, then a longer one that outlives the checks.
	short, cancelShort := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancelShort()
	if err := receiveErr(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive past ctx deadline = %v, want DeadlineExceeded", err)
	}
	long, cancelLong := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancelLong()
	if err := receiveErr(long); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < time.Second {
		t.Fatalf("Receive = %v after %v, want DeadlineExceeded after the 1 s check", err, time.Since(start))
	}
	// Uevents still arrive normally.
	if err := alive(c); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d lost, %d received", lost, got)
}

// TestReceiveAfterClose: Close wakes a blocked Receive with
// watchq.ErrClosed, later Receives say the same, and a second Close
// returns nil.
func TestReceiveAfterClose(t *testing.T) {
	c := dial(t, uevent.Config{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Receive(context.Background(), make([]byte, uevent.MaxSize))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closed := func(err error) bool { return errors.Is(err, watchq.ErrClosed) && errors.Is(err, os.ErrClosed) }
	select {
	case err := <-done:
		// A kernel uevent may have come first; then the next says closed.
		if err == nil {
			_, err = c.Receive(context.Background(), make([]byte, uevent.MaxSize))
		}
		if !closed(err) {
			t.Errorf("Receive woken by Close = %v, want watchq.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Receive still blocked 10 s after Close")
	}
	if _, err := c.Receive(context.Background(), make([]byte, uevent.MaxSize)); !closed(err) {
		t.Errorf("Receive after Close = %v, want watchq.ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}
