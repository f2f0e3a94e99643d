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

// errDaemonAbsent marks a failure to reach watchqd (as opposed to a
// request it refused), after which the in-process source is tried.
type errDaemonAbsent struct{ err error }

func (e errDaemonAbsent) Error() string { return e.err.Error() }
func (e errDaemonAbsent) Unwrap() error { return e.err }

// watchMountsDaemon places o.mounts through watchqd at --socket and starts
// the relay (daemonRelay): one local watch list per tag. Removal records
// are relayed as they come (each ends its tag's watch, which --wait does
// not place again); when the daemon goes, the watches not yet removed end
// with a removal record (id 0: the daemon did not say) and the command
// with an error, unless --wait reconnects. A failure to connect is an
// errDaemonAbsent.
func (o *watchOptions) watchMountsDaemon(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, stderr io.Writer) (source, string, error) {
	// lists holds the watches not yet removed, by tag; touched by the
	// relay's goroutine only once it runs.
	lists := make(map[record.Tag]*watchq.WatchList)
	var descs []string
	// place sets up a daemon queue with the watches of o.mounts that
	// lists holds (all of them the first time, when lists is nil).
	place := func(ctx context.Context, first bool) (*client.Client, *client.Queue, error) {
		c, dq, err := o.daemonQueue(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		for _, w := range o.mounts {
			if !first && lists[w.tag] == nil {
				continue
			}
			what := "mounts"
			if w.fs {
				what = "fs"
				err = dq.WatchSuperblock(ctx, w.path, w.tag)
				if errors.Is(err, mount.ErrNoFSErrors) {
					if first {
						fmt.Fprintf(stderr, "watchq: fs: %s: read-only changes only: %v\n", w.path, err)
					}
					err = nil
				}
			} else {
				err = dq.WatchMount(ctx, w.path, w.tag)
			}
			if err != nil && !first && !errors.Is(err, client.ErrDaemonGone) && ctx.Err() == nil {
				// Refused (the path went meanwhile): the watch
				// ends as if removed.
				fmt.Fprintf(stderr, "watchq: %s: %s tag %d not watched again: %v\n", what, w.path, w.tag, err)
				lists[w.tag].Destroy()
				delete(lists, w.tag)
				continue
			}
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			if first {
				descs = append(descs, fmt.Sprintf("%s %s tag %d", what, w.path, w.tag))
			}
		}
		return c, dq, nil
	}
	c, dq, err := place(ctx, true)
	if err != nil {
		return nil, "", err
	}
	for _, w := range o.mounts {
		if lists[w.tag] == nil {
			wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindMount})
			if err := wl.Add(q, 0, w.tag, watchq.CurrentCred()); err != nil {
				c.Close()
				for _, wl := range lists {
					wl.Destroy()
				}
				return nil, "", err
			}
			lists[w.tag] = wl
		}
	}
	res := mount.NewResolver()
	o.mountPoints = res.MountPoint
	buf := make([]byte, record.NoteSize)
	r := &daemonRelay{what: "mounts", o: o, stderr: stderr,
		connect: func(ctx context.Context) (*client.Client, *client.Queue, error) { return place(ctx, false) },
		post: func(rec record.Record) error {
			wl := lists[rec.Tag()]
			if wl == nil {
				return nil
			}
			res.Note(rec)
			wl.Post(append(buf[:0], rec...), watchq.SystemCred, 0)
			if rec.IsRemoval() {
				// Each command watches one path per tag, so the
				// removal ends its tag's watch.
				delete(lists, rec.Tag())
			}
			return nil
		},
		loss: func(n uint64) {
			for _, wl := range lists {
				wl.PostLoss(n)
				break // one loss record for the one queue
			}
		},
		end: func() {
			for tag, wl := range lists {
				wl.Destroy()
				delete(lists, tag)
			}
		},
		again: func() string {
			var again []string
			for i, w := range o.mounts {
				if lists[w.tag] != nil {
					again = append(again, descs[i])
				}
			}
			return strings.Join(again, ", ")
		},
	}
	r.start(c, dq)
	return r, strings.Join(descs, ", ") + " (watchqd)", nil
}
