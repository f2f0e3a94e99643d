package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

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

// daemonQueue dials watchqd at --socket and creates a queue as the
// command's own is: its size and filter. A failure to connect is an
// errDaemonAbsent.
func (o *watchOptions) daemonQueue(ctx context.Context, q *watchq.Queue) (*client.Client, *client.Queue, error) {
	c, err := client.Dial(ctx, o.socket)
	if err != nil {
		return nil, nil, errDaemonAbsent{err}
	}
	dq, err := c.CreateQueue(ctx, o.size)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if f := q.Filter(); f != nil {
		if err := dq.SetFilter(ctx, f); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	return c, dq, nil
}

// connectDaemon sets up a daemon queue (daemonQueue) with a watch on the
// device list with the command's tag.
func (o *watchOptions) connectDaemon(ctx context.Context, q *watchq.Queue) (*client.Client, *client.Queue, client.Sources, error) {
	c, dq, err := o.daemonQueue(ctx, q)
	if err != nil {
		return nil, nil, 0, err
	}
	classes, err := dq.WatchDevices(ctx, o.deviceTag)
	if err != nil {
		c.Close()
		return nil, nil, 0, err
	}
	return c, dq, classes, nil
}

// watchDevicesDaemon connects to watchqd and starts the relay
// (daemonRelay: with --wait it reconnects). A removal record from the
// daemon ends the device watch and the command.
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
	buf := make([]byte, record.NoteSize)
	r := &daemonRelay{what: "devices", o: o, stderr: stderr,
		connect: func(ctx context.Context) (*client.Client, *client.Queue, error) {
			c, dq, _, err := o.connectDaemon(ctx, q)
			return c, dq, err
		},
		post: func(rec record.Record) error {
			if rec.IsRemoval() {
				return fmt.Errorf("the daemon removed the device watch: %w", watchq.ErrNoWatch)
			}
			wl.Post(append(buf[:0], rec...), watchq.SystemCred, 0)
			return nil
		},
		loss:  func(n uint64) { wl.PostLoss(n) },
		end:   wl.Destroy,
		again: func() string { return fmt.Sprintf("devices tag %d", o.deviceTag) },
	}
	r.start(c, dq)
	return r, fmt.Sprintf("devices tag %d (watchqd: %v)", o.deviceTag, classes), nil
}
