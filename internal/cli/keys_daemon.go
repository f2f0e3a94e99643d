package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys"
)

// keyWatch is one key watch relayed from watchqd: its local watch list
// and its tag, to place it again on reconnection.
type keyWatch struct {
	wl  *watchq.WatchList
	tag record.Tag
}

// watchKeysDaemon watches ks through watchqd at o.socket, if its key
// source uses the traced backend: what an unprivileged user gets on a
// kernel without the facility. Special ids resolve here, in this
// process's context (Queue.WatchKey). The relay (daemonRelay) keeps one
// local watch list per key, so each record keeps its key's tag and a
// removal ends only its watch (which --wait does not place again).
func (o *watchOptions) watchKeysDaemon(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, ks []keyArg, stderr io.Writer) (source, []int32, error) {
	// lists holds the watches not yet removed, by serial; touched by
	// the relay's goroutine only once it runs.
	lists := make(map[uint32]keyWatch)
	var serials []int32
	// place sets up a daemon queue and watches the keys: every one of ks
	// the first time, then those lists holds.
	place := func(ctx context.Context, first bool) (*client.Client, *client.Queue, error) {
		c, dq, err := o.daemonQueue(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		fail := func(err error) (*client.Client, *client.Queue, error) {
			c.Close()
			return nil, nil, err
		}
		kb, err := c.KeyBackend(ctx)
		if err != nil {
			return fail(err)
		}
		if kb != protocol.KeyBackendTraced {
			return fail(fmt.Errorf("watchqd serves no traced key watches (key backend %d)", kb))
		}
		if !first {
			for serial, w := range lists {
				err := dq.WatchKey(ctx, int32(serial), w.tag)
				if err == nil {
					continue
				}
				if errors.Is(err, client.ErrDaemonGone) || ctx.Err() != nil {
					return fail(err)
				}
				// Refused (the key went meanwhile, or is no longer
				// viewable): the watch ends as if removed.
				fmt.Fprintf(stderr, "watchq: keys: key %08x tag %d not watched again: %v\n", serial, w.tag, err)
				w.wl.Destroy()
				delete(lists, serial)
			}
			return c, dq, nil
		}
		for _, k := range ks {
			serial, err := keys.Resolve(k.id)
			if err != nil {
				return fail(fmt.Errorf("resolve %s: %w", k.spec, err))
			}
			if err := dq.WatchKey(ctx, serial, k.tag); err != nil {
				return fail(fmt.Errorf("watchqd: watch %s: %w", k.spec, err))
			}
			serials = append(serials, serial)
		}
		return c, dq, nil
	}
	c, dq, err := place(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	end := func() {
		for serial, w := range lists {
			w.wl.Destroy()
			delete(lists, serial)
		}
	}
	for i, k := range ks {
		serial := serials[i]
		wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindKey, ID: keys.ObjectID(serial)})
		if err := wl.Add(q, keys.ObjectID(serial), k.tag, watchq.CurrentCred()); err != nil {
			c.Close()
			end()
			return nil, nil, err
		}
		lists[uint32(serial)] = keyWatch{wl, k.tag}
	}
	buf := make([]byte, record.NoteSize)
	r := &daemonRelay{what: "keys", o: o, stderr: stderr,
		connect: func(ctx context.Context) (*client.Client, *client.Queue, error) { return place(ctx, false) },
		post: func(rec record.Record) error {
			if rec.IsRemoval() {
				if m, err := rec.Removal(); err == nil {
					if w, ok := lists[uint32(m.ID)]; ok {
						w.wl.Destroy()
						delete(lists, uint32(m.ID))
					}
				}
				return nil
			}
			if k, err := rec.Key(); err == nil {
				if w, ok := lists[k.KeyID]; ok {
					w.wl.Post(append(buf[:0], rec...), watchq.SystemCred, keys.ObjectID(int32(k.KeyID)))
				}
			}
			return nil
		},
		loss: func(n uint64) {
			for _, w := range lists {
				w.wl.PostLoss(n)
				break // one loss: the queue's, not per key
			}
		},
		end: end,
		again: func() string {
			var again []string
			for i, k := range ks {
				if _, ok := lists[uint32(serials[i])]; ok {
					again = append(again, keyText(k, serials[i]))
				}
			}
			return "keys " + strings.Join(again, ", ")
		},
	}
	r.start(c, dq)
	return r, serials, nil
}

// daemonFirst reports whether watch keys tries watchqd before an
// in-process source: for a user other than root (who cannot load the
// tracer) asking for the traced backend, or for Auto on a kernel without
// the facility.
func daemonFirst(b keys.Backend, euid int) bool {
	if euid == 0 {
		return false
	}
	switch b {
	case keys.Traced:
		return true
	case keys.Auto:
		if v := os.Getenv(keys.BackendEnv); v != "" && v != "auto" {
			return v == "traced"
		}
		return errors.Is(kernel.Probe(), kernel.ErrNotSupported)
	}
	return false
}

// writeStatKeys is stat's line about the daemon's key source: which
// backend serves watch-key and what it cannot see.
func writeStatKeys(ctx context.Context, w io.Writer, c *client.Client) error {
	kb, err := c.KeyBackend(ctx)
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	switch kb {
	case protocol.KeyBackendTraced:
		_, err = fmt.Fprintln(w, "key source traced (BPF on keyctl/add_key/request_key; View checked in the watcher's context, "+
			"keys viewable only as possessor refused; gc and the kernel's own changes seen only for keys watchqd may view)")
	case protocol.KeyBackendNone:
		_, err = fmt.Fprintln(w, "key source not running (watch-key: ENODEV)")
	default:
		_, err = fmt.Fprintf(w, "key source backend %d\n", kb)
	}
	return err
}
