package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
)

// Reconnection backoff under --wait: doubling from the first to the last.
const (
	reconnectFirst = 50 * time.Millisecond
	reconnectMax   = 5 * time.Second
)

// daemonRelay is the one relay of a watchqd queue's records into the
// command's local watch lists, shared by every daemon-backed watch
// (devices, mounts|fs, keys), so they reach the command's own queue with
// its tags, filter and read sizes. When the daemon goes away, the relay
// ends the remaining watches (removal records) and the command with an
// error; with --wait it posts a loss record for the gap instead,
// reconnects with backoff and re-establishes the watches not yet removed.
//
// connect, post, loss, end and again run on the relay's goroutine only
// (after start), so the state they share needs no lock of its own.
type daemonRelay struct {
	what   string // "devices", "mounts", "keys": the messages' subject
	o      *watchOptions
	stderr io.Writer

	// connect dials watchqd and sets up a queue as the command's own is
	// (size, filter) with the watches not yet removed.
	connect func(ctx context.Context) (*client.Client, *client.Queue, error)
	// post relays one record other than a loss record; an error ends the
	// relay and the command.
	post func(rec record.Record) error
	// loss posts a loss of n records on the command's queue.
	loss func(n uint64)
	// end ends the local watches not yet removed, with removal records.
	end func()
	// again says what is watched again, for the reconnection line.
	again func() string

	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex     // guards c
	c  *client.Client // the connection now in use; nil while reconnecting
}

// start runs the relay on c's queue dq until Close or the daemon's end.
func (r *daemonRelay) start(c *client.Client, dq *client.Queue) {
	rctx, cancel := context.WithCancel(context.Background())
	r.c, r.cancel, r.done = c, cancel, make(chan struct{})
	go r.run(rctx, dq)
}

// Close stops the relay and closes the connection.
func (r *daemonRelay) Close() error {
	r.cancel()
	r.mu.Lock()
	c := r.c
	r.mu.Unlock()
	var err error
	if c != nil {
		err = c.Close()
	}
	<-r.done
	return err
}

// run relays dq's records, and reconnects under --wait.
func (r *daemonRelay) run(ctx context.Context, dq *client.Queue) {
	defer close(r.done)
	for {
		err := r.pump(ctx, dq)
		if ctx.Err() != nil {
			r.end()
			return
		}
		gone := errors.Is(err, client.ErrDaemonGone)
		if !gone || !r.o.wait {
			// The watches are gone, as when their objects are
			// destroyed; then the command ends.
			if gone {
				err = fmt.Errorf("%s: watchqd at %s went away; start it again (systemctl start watchqd.socket) or watch with --wait to reconnect", r.what, r.o.socket)
			} else {
				err = fmt.Errorf("%s: watchqd at %s: %w", r.what, r.o.socket, err)
			}
			r.o.ending.Store(&err)
			r.end()
			r.o.fail(err)
			return
		}
		// The gap is marked in-band at once: a loss of unknown size,
		// counted as one record.
		r.loss(1)
		r.mu.Lock()
		r.c.Close()
		r.c = nil
		r.mu.Unlock()
		fmt.Fprintf(r.stderr, "watchq: %s: watchqd at %s went away; reconnecting (--wait); records meanwhile are lost (loss record)\n", r.what, r.o.socket)
		var nc *client.Client
		for delay := reconnectFirst; ; delay = min(2*delay, reconnectMax) {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				r.end()
				return
			case <-t.C:
			}
			if nc, dq, err = r.connect(ctx); err == nil {
				break
			}
		}
		r.mu.Lock()
		r.c = nc
		r.mu.Unlock()
		if ctx.Err() != nil { // Close ran meanwhile and missed nc
			nc.Close()
			r.end()
			return
		}
		fmt.Fprintf(r.stderr, "watchq: %s: reconnected to watchqd at %s; watching %s again\n", r.what, r.o.socket, r.again())
	}
}

// pump posts dq's records until the queue ends, and returns why it ended.
// The daemon's loss records become one loss on the command's queue.
func (r *daemonRelay) pump(ctx context.Context, dq *client.Queue) error {
	for rec, err := range dq.Records(ctx) {
		switch {
		case err != nil:
			return err
		case rec.IsLoss():
			l, _ := rec.Loss()
			r.loss(uint64(max(l.Count, 1)))
		default:
			if err := r.post(rec); err != nil {
				return err
			}
		}
	}
	return client.ErrDaemonGone // not reached: Records ends with an error
}
