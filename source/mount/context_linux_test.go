package mount

import (
	"context"
	"errors"
	"testing"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// TestOpenContext: ctx governs the source's life as in keys and device: a
// ctx already done fails Open; cancelling it later closes the source, the
// watch ending with its removal record.
func TestOpenContext(t *testing.T) {
	eng := watchq.NewEngine(watchq.Config{})
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := Open(done, Config{Engine: eng, Backend: Mountinfo}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a done ctx = %v, want context.Canceled", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := Open(ctx, Config{Engine: eng, Backend: Mountinfo, NoFSErrors: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	q := newQueue(t, 32)
	if err := src.WatchMount(q, "/", 7, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	rs := watchqtest.Collect(t, q, 1, watchqtest.Timeout)
	if m, err := rs[0].Removal(); err != nil || m.Tag != 7 {
		t.Fatalf("after cancel: %v (%v), want the watch's removal record", record.Record(rs[0]), err)
	}
	if err := src.Sync(context.Background()); !errors.Is(err, watchq.ErrClosed) {
		t.Errorf("Sync after cancel = %v, want ErrClosed", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("Close after cancel = %v", err)
	}
}
