//go:build linux

package keys

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
)

// lifecycleBackends are the backends this kernel runs.
func lifecycleBackends(t *testing.T) []Backend {
	testenv.RequireFile(t, "/proc/keys")
	bs := []Backend{Poll}
	if kernel.Probe() == nil {
		bs = append(bs, Kernel)
	}
	if src, err := openTracedSource(); err == nil {
		src.Close()
		bs = append(bs, Traced)
	}
	return bs
}

// isClosed reports whether err is the one closed error, under both names.
func isClosed(err error) bool {
	return errors.Is(err, watchq.ErrClosed) && errors.Is(err, os.ErrClosed)
}

// TestCloseIdempotent: a second Close returns nil, and every method of a
// closed source fails with watchq.ErrClosed.
func TestCloseIdempotent(t *testing.T) {
	for _, b := range lifecycleBackends(t) {
		t.Run(b.String(), func(t *testing.T) {
			src, q := openBackend(t, b, 0, 64)
			ring := newKeyring(t, "wq-close-"+b.String())
			must(t, "watch", src.Watch(q, ring, 1, nil))
			if err := src.Close(); err != nil {
				t.Fatal(err)
			}
			if err := src.Close(); err != nil {
				t.Errorf("second Close = %v, want nil", err)
			}
			if err := src.Watch(q, ring, 2, nil); !isClosed(err) {
				t.Errorf("Watch after Close = %v, want watchq.ErrClosed", err)
			}
			if err := src.Unwatch(q, ring); !isClosed(err) {
				t.Errorf("Unwatch after Close = %v, want watchq.ErrClosed", err)
			}
			if err := src.Sync(context.Background()); !isClosed(err) {
				t.Errorf("Sync after Close = %v, want watchq.ErrClosed", err)
			}
		})
	}
}

// TestOpenContext: ctx governs the source's life. A done ctx fails Open;
// cancelling it later closes the source, every watch ending with its
// removal record.
func TestOpenContext(t *testing.T) {
	eng := watchq.NewEngine(watchq.Config{})
	for _, b := range lifecycleBackends(t) {
		t.Run(b.String(), func(t *testing.T) {
			done, cancel := context.WithCancel(context.Background())
			cancel()
			if src, err := Open(done, Config{Engine: eng, Backend: b}); !errors.Is(err, context.Canceled) {
				if err == nil {
					src.Close()
				}
				t.Fatalf("Open with a cancelled ctx = %v, want context.Canceled", err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			src, err := Open(ctx, Config{Engine: eng, Backend: b, Interval: time.Hour})
			must(t, "open", err)
			defer src.Close()
			q := watchq.NewQueue()
			defer q.Close()
			if _, err := q.SetSize(64); err != nil {
				t.Fatal(err)
			}
			ring := newKeyring(t, "wq-ctx-"+b.String())
			must(t, "watch", src.Watch(q, ring, 7, nil))
			cancel()
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer rcancel()
			r, err := q.Next(rctx)
			if err != nil {
				t.Fatalf("no record after cancelling Open's ctx: %v", err)
			}
			m, err := r.Removal()
			if !r.IsRemoval() || err != nil || m.ID != record.ObjectID(uint32(ring)) || r.Tag() != 7 {
				t.Fatalf("record after cancelling Open's ctx: % x, want the removal of %d with tag 7", []byte(r), ring)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !isClosed(src.Watch(q, ring, 8, nil)) {
				if time.Now().After(deadline) {
					t.Fatal("source still open 10 s after its ctx was cancelled")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
