package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/mount"
)

// daemonMounts relays the records of a daemon queue holding o.mounts'
// watches into one local watch list per tag, so they reach the command's
// own queue with its filter and read sizes, as daemonDevices does.
// Removal records are relayed as they come (each ends its watch); when
// the daemon goes, the watches not yet removed end with a removal record
// (id 0: the daemon did not say) and the command with an error. There is
// no --wait reconnection for mounts yet.
type daemonMounts struct {
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// Close stops the relay and closes the connection.
func (d *daemonMounts) Close() error {
	d.cancel()
	err := d.c.Close()
	<-d.done
	return err
}

// errDaemonAbsent marks a failure to reach watchqd (as opposed to a
// request it refused), after which the in-process source is tried.
type errDaemonAbsent struct{ err error }

func (e errDaemonAbsent) Error() string { return e.err.Error() }
func (e errDaemonAbsent) Unwrap() error { return e.err }

// watchMountsDaemon places o.mounts through watchqd at --socket and starts
// the relay. A failure to connect is an errDaemonAbsent.
func (o *watchOptions) watchMountsDaemon(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, stderr io.Writer) (source, string, error) {
	c, err := client.Dial(ctx, o.socket)
	if err != nil {
		return nil, "", errDaemonAbsent{err}
	}
	fail := func(err error) (source, string, error) { c.Close(); return nil, "", err }
	dq, err := c.CreateQueue(ctx, o.size)
	if err != nil {
		return fail(err)
	}
	if f := q.Filter(); f != nil {
		if err := dq.SetFilter(ctx, f); err != nil {
			return fail(err)
		}
	}
	lists := make(map[record.Tag]*watchq.WatchList)
	var descs []string
	for _, w := range o.mounts {
		what := "mounts"
		if w.fs {
			what = "fs"
			err = dq.WatchSuperblock(ctx, w.path, w.tag)
			if errors.Is(err, mount.ErrNoFSErrors) {
				fmt.Fprintf(stderr, "watchq: fs: %s: read-only changes only: %v\n", w.path, err)
				err = nil
			}
		} else {
			err = dq.WatchMount(ctx, w.path, w.tag)
		}
		if err != nil {
			return fail(err)
		}
		if lists[w.tag] == nil {
			wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindMount})
			if err := wl.Add(q, 0, w.tag, watchq.CurrentCred()); err != nil {
				return fail(err)
			}
			lists[w.tag] = wl
		}
		descs = append(descs, fmt.Sprintf("%s %s tag %d", what, w.path, w.tag))
	}
	res := mount.NewResolver()
	o.mountPoints = res.MountPoint
	rctx, cancel := context.WithCancel(context.Background())
	d := &daemonMounts{c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		buf := make([]byte, record.NoteSize)
		for rec, err := range dq.Records(rctx) {
			if err != nil {
				// The daemon went away or we are stopping: the
				// watches end, as when their mounts go; a daemon
				// gone ends the command too, as for devices.
				for _, wl := range lists {
					wl.Destroy()
				}
				if rctx.Err() == nil {
					if errors.Is(err, client.ErrDaemonGone) {
						err = fmt.Errorf("mounts: watchqd at %s went away; start it again (systemctl start watchqd.socket)", o.socket)
					} else {
						err = fmt.Errorf("mounts: watchqd at %s: %w", o.socket, err)
					}
					o.fail(err)
				}
				return
			}
			if rec.IsLoss() {
				l, _ := rec.Loss()
				for _, wl := range lists {
					wl.PostLoss(uint64(max(l.Count, 1)))
					break // one loss record for the one queue
				}
				continue
			}
			wl := lists[rec.Tag()]
			if wl == nil {
				continue
			}
			res.Note(rec)
			wl.Post(append(buf[:0], rec...), watchq.SystemCred, 0)
			if rec.IsRemoval() {
				// Each command watches one path per tag, so the
				// removal ends its tag's watch.
				delete(lists, rec.Tag())
			}
		}
	}()
	return d, strings.Join(descs, ", ") + " (watchqd)", nil
}
