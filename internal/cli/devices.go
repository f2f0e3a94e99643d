package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device"
)

// defaultSocket is the daemon socket --socket defaults to.
func defaultSocket() string { return client.DefaultSocket }

// watchDevices watches the device list for q: through the daemon if it
// answers at --socket, else in-process: the whole source as root, its
// uevents alone (device lifecycle) as another user.
func (o *watchOptions) watchDevices(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, stderr io.Writer) (source, string, error) {
	src, desc, derr := o.watchDevicesDaemon(ctx, eng, q, stderr)
	if derr == nil {
		fmt.Fprintf(stderr, "watchq: devices: watchqd at %s (in-process source not used)\n", o.socket)
		return src, desc, nil
	}
	daemonWhy := dialError(o.socket, derr).Error()
	cfg := device.Config{Engine: eng}
	if os.Geteuid() != 0 {
		// The kobject uevent netlink socket needs no privilege
		// (lib/kobject_uevent.c: NL_CFG_F_NONROOT_RECV); the tracers
		// (BPF) do, and they are not tried.
		cfg.NoBlockErrors, cfg.NoUSBReset = true, true
	}
	ds, err := device.Open(ctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("%s; in-process device source: %w", daemonWhy, err)
	}
	if err := ds.Watch(q, o.deviceTag, nil); err != nil {
		ds.Close()
		return nil, "", fmt.Errorf("%s; in-process device watch: %w", daemonWhy, err)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintf(stderr, "watchq: devices: in-process, uevents only (device lifecycle); block I/O errors and USB resets need watchqd or root; %s\n", daemonWhy)
		return ds, fmt.Sprintf("devices tag %d", o.deviceTag), nil
	}
	fmt.Fprintf(stderr, "watchq: devices: in-process (%s); %s\n", capsText(ds.Capabilities()), daemonWhy)
	return ds, fmt.Sprintf("devices tag %d", o.deviceTag), nil
}

// capsText describes which parts of the in-process device source run.
func capsText(c device.Capabilities) string {
	part := func(name string, err error, extra string) string {
		if err != nil {
			return name + " unavailable: " + err.Error()
		}
		if extra != "" {
			return name + " via " + extra
		}
		return name
	}
	return strings.Join([]string{
		part("uevents", c.Uevents, ""),
		part("block errors", c.BlockErrors, c.BlockTracepoint),
		part("USB resets", c.USBReset, ""),
	}, "; ")
}

// daemonDevices relays the records of a daemon queue watching the device
// list into a local watch list, so they reach the command's own queue with
// its tag, filter and read sizes.
type daemonDevices struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex     // guards c
	c  *client.Client // the connection now in use; nil while reconnecting
}

// Close stops the relay and closes the connection.
func (d *daemonDevices) Close() error {
	d.cancel()
	d.mu.Lock()
	c := d.c
	d.mu.Unlock()
	var err error
	if c != nil {
		err = c.Close()
	}
	<-d.done
	return err
}

// connectDaemon dials watchqd and sets up a queue as the command's own is:
// its size and filter, and a watch on the device list with its tag.
func (o *watchOptions) connectDaemon(ctx context.Context, q *watchq.Queue) (*client.Client, *client.Queue, client.Sources, error) {
	c, err := client.Dial(ctx, o.socket)
	if err != nil {
		return nil, nil, 0, err
	}
	dq, err := c.CreateQueue(ctx, o.size)
	if err != nil {
		c.Close()
		return nil, nil, 0, err
	}
	if f := q.Filter(); f != nil {
		if err := dq.SetFilter(ctx, f); err != nil {
			c.Close()
			return nil, nil, 0, err
		}
	}
	classes, err := dq.WatchDevices(ctx, o.deviceTag)
	if err != nil {
		c.Close()
		return nil, nil, 0, err
	}
	return c, dq, classes, nil
}

// Reconnection backoff under --wait: doubling from the first to the last.
const (
	reconnectFirst = 50 * time.Millisecond
	reconnectMax   = 5 * time.Second
)

// watchDevicesDaemon connects to watchqd and starts the relay. When the
// daemon goes away, the relay ends the device watch with a removal record
// and the command with an error; with --wait it posts a loss record for
// the gap instead and reconnects.
func (o *watchOptions) watchDevicesDaemon(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, stderr io.Writer) (source, string, error) {
	c, dq, classes, err := o.connectDaemon(ctx, q)
	if err != nil {
		return nil, "", err
	}
	wl := eng.NewWatchList(device.Object)
	if err := wl.Add(q, device.DevicesID, o.deviceTag, watchq.CurrentCred()); err != nil {
		c.Close()
		return nil, "", err
	}
	rctx, cancel := context.WithCancel(context.Background())
	d := &daemonDevices{c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for {
			err := relay(rctx, dq, wl)
			if rctx.Err() != nil {
				wl.Destroy()
				return
			}
			gone := errors.Is(err, client.ErrDaemonGone)
			if !gone || !o.wait {
				// The watch is gone, as when a watched object is
				// destroyed; then the command ends.
				wl.Destroy()
				if gone {
					err = fmt.Errorf("devices: watchqd at %s went away; start it again (systemctl start watchqd.socket) or watch with --wait to reconnect", o.socket)
				} else {
					err = fmt.Errorf("devices: watchqd at %s: %w", o.socket, err)
				}
				o.fail(err)
				return
			}
			// The gap is marked in-band at once: a loss of unknown
			// size, counted as one record.
			wl.PostLoss(1)
			d.mu.Lock()
			d.c.Close()
			d.c = nil
			d.mu.Unlock()
			fmt.Fprintf(stderr, "watchq: devices: watchqd at %s went away; reconnecting (--wait); records meanwhile are lost (loss record)\n", o.socket)
			var nc *client.Client
			for delay := reconnectFirst; ; delay = min(2*delay, reconnectMax) {
				t := time.NewTimer(delay)
				select {
				case <-rctx.Done():
					t.Stop()
					wl.Destroy()
					return
				case <-t.C:
				}
				if nc, dq, _, err = o.connectDaemon(rctx, q); err == nil {
					break
				}
			}
			d.mu.Lock()
			d.c = nc
			d.mu.Unlock()
			if rctx.Err() != nil { // Close ran meanwhile and missed nc
				nc.Close()
				wl.Destroy()
				return
			}
			fmt.Fprintf(stderr, "watchq: devices: reconnected to watchqd at %s; watching devices tag %d again\n", o.socket, o.deviceTag)
		}
	}()
	return d, fmt.Sprintf("devices tag %d (watchqd: %v)", o.deviceTag, classes), nil
}

// relay posts the daemon queue's records into wl until the queue ends,
// and returns why it ended. A removal record ends it with watchq.ErrNoWatch.
func relay(ctx context.Context, dq *client.Queue, wl *watchq.WatchList) error {
	buf := make([]byte, record.NoteSize)
	for rec, err := range dq.Records(ctx) {
		switch {
		case err != nil:
			return err
		case rec.IsLoss():
			l, _ := rec.Loss()
			wl.PostLoss(uint64(max(l.Count, 1)))
		case rec.IsRemoval():
			return fmt.Errorf("the daemon removed the device watch: %w", watchq.ErrNoWatch)
		default:
			wl.Post(append(buf[:0], rec...), watchq.SystemCred, 0)
		}
	}
	return client.ErrDaemonGone // not reached: Records ends with an error
}
