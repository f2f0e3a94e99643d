package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys"
)

// daemonKeys is key watches served by watchqd's traced key source,
// relayed into the local engine queue: one local watch list per key, so
// each record keeps its key's tag and a removal ends only its watch.
type daemonKeys struct {
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	lists map[uint32]*watchq.WatchList // by serial. Guarded by mu.
}

// Close ends the relay and the daemon connection (its queue and watches go
// with it).
func (d *daemonKeys) Close() error {
	d.cancel()
	err := d.c.Close()
	<-d.done
	return err
}

// watchKeysDaemon watches ks through watchqd at o.socket, if its key
// source uses the traced backend: what an unprivileged user gets on a
// kernel without the facility. Special ids resolve here, in this
// process's context (Queue.WatchKey).
func (o *watchOptions) watchKeysDaemon(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, ks []keyArg) (*daemonKeys, []int32, error) {
	c, err := client.Dial(ctx, o.socket)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*daemonKeys, []int32, error) {
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
	dq, err := c.CreateQueue(ctx, o.size)
	if err != nil {
		return fail(err)
	}
	if f := q.Filter(); f != nil {
		if err := dq.SetFilter(ctx, f); err != nil {
			return fail(err)
		}
	}
	d := &daemonKeys{c: c, done: make(chan struct{}), lists: make(map[uint32]*watchq.WatchList)}
	var serials []int32
	for _, k := range ks {
		serial, err := keys.Resolve(k.id)
		if err != nil {
			return fail(fmt.Errorf("resolve %s: %w", k.spec, err))
		}
		if err := dq.WatchKey(ctx, serial, k.tag); err != nil {
			return fail(fmt.Errorf("watchqd: watch %s: %w", k.spec, err))
		}
		wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindKey, ID: keys.ObjectID(serial)})
		if err := wl.Add(q, keys.ObjectID(serial), k.tag, watchq.CurrentCred()); err != nil {
			return fail(err)
		}
		d.lists[uint32(serial)] = wl
		serials = append(serials, serial)
	}
	rctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go d.relay(rctx, dq)
	return d, serials, nil
}

// relay reposts the daemon queue's records into the local lists: key
// records to their key's list, a removal to its key's list (Destroy), the
// daemon's loss record as one loss on the local queue.
func (d *daemonKeys) relay(ctx context.Context, dq *client.Queue) {
	defer close(d.done)
	defer func() {
		d.mu.Lock()
		for _, wl := range d.lists {
			wl.Destroy()
		}
		d.mu.Unlock()
	}()
	buf := make([]byte, record.NoteSize)
	for rec, err := range dq.Records(ctx) {
		if err != nil {
			return
		}
		d.mu.Lock()
		switch {
		case rec.IsLoss():
			l, _ := rec.Loss()
			if wl := d.anyLocked(); wl != nil { // one loss: the queue's, not per key
				wl.PostLoss(uint64(max(l.Count, 1)))
			}
		case rec.IsRemoval():
			if m, err := rec.Removal(); err == nil {
				if wl := d.lists[uint32(m.ID)]; wl != nil {
					wl.Destroy()
					delete(d.lists, uint32(m.ID))
				}
			}
		default:
			if k, err := rec.Key(); err == nil {
				if wl := d.lists[k.KeyID]; wl != nil {
					wl.Post(append(buf[:0], rec...), watchq.SystemCred, keys.ObjectID(int32(k.KeyID)))
				}
			}
		}
		d.mu.Unlock()
	}
}

// anyLocked returns one of the lists, nil if none is left. d.mu must be
// held.
func (d *daemonKeys) anyLocked() *watchq.WatchList {
	for _, wl := range d.lists {
		return wl
	}
	return nil
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
