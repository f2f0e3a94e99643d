package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device"
)

// defaultSocket is the daemon socket --socket defaults to.
func defaultSocket() string { return client.DefaultSocket }

// watchDevices watches the device list for q: through the daemon if it
// answers at --socket, else in-process when running as root.
func (o *watchOptions) watchDevices(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, stderr io.Writer) (source, string, error) {
	src, desc, derr := o.watchDevicesDaemon(ctx, eng, q)
	if derr == nil {
		fmt.Fprintf(stderr, "watchq: devices: watchqd at %s (in-process source not used)\n", o.socket)
		return src, desc, nil
	}
	daemonWhy := fmt.Sprintf("watchqd at %s: %s", o.socket, dialWhy(derr))
	if os.Geteuid() != 0 {
		return nil, "", fmt.Errorf("%s; in-process device source needs root", daemonWhy)
	}
	ds, err := device.Open(ctx, device.Config{Engine: eng})
	if err != nil {
		return nil, "", fmt.Errorf("%s; in-process device source: %w", daemonWhy, err)
	}
	if err := ds.Watch(q, o.deviceTag, nil); err != nil {
		ds.Close()
		return nil, "", fmt.Errorf("%s; in-process device watch: %w", daemonWhy, err)
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
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// Close stops the relay and closes the connection.
func (d *daemonDevices) Close() error {
	d.cancel()
	err := d.c.Close()
	<-d.done
	return err
}

// watchDevicesDaemon connects to watchqd and starts the relay.
func (o *watchOptions) watchDevicesDaemon(ctx context.Context, eng *watchq.Engine, q *watchq.Queue) (source, string, error) {
	c, err := client.Dial(ctx, o.socket)
	if err != nil {
		return nil, "", err
	}
	dq, err := c.CreateQueue(ctx, o.size)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	if f := q.Filter(); f != nil {
		if err := dq.SetFilter(ctx, f); err != nil {
			c.Close()
			return nil, "", err
		}
	}
	classes, err := dq.WatchDevices(ctx, o.deviceTag)
	if err != nil {
		c.Close()
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
		buf := make([]byte, record.NoteSize)
		for rec, err := range dq.Records(rctx) {
			if err != nil {
				// The daemon went away or we are stopping: the watch
				// is gone, as when a watched object is destroyed.
				wl.Destroy()
				return
			}
			switch {
			case rec.IsLoss():
				l, _ := rec.Loss()
				wl.PostLoss(uint64(max(l.Count, 1)))
			case rec.IsRemoval():
				wl.Destroy()
				return
			default:
				wl.Post(append(buf[:0], rec...), watchq.SystemCred, 0)
			}
		}
	}()
	return d, fmt.Sprintf("devices tag %d (watchqd: %v)", o.deviceTag, classes), nil
}

// dialWhy says briefly why the daemon did not answer: the errno of a failed
// connect ("not running: connection refused"), or the whole error.
func dialWhy(err error) string {
	var errno syscall.Errno
	var ce *client.Error
	switch {
	case errors.As(err, &ce):
		return err.Error()
	case errors.As(err, &errno):
		return "not running (" + errno.Error() + ")"
	}
	return err.Error()
}
