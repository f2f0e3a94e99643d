package keys

import (
	"context"
	"fmt"
	"time"

	"github.com/watchq/watchq"
)

// passLoop runs pass every interval and whenever Sync kicks it (answering
// by closing the kick's channel), until stop is closed. The poll backend
// and the traced backend's poll side share it.
func passLoop(stop <-chan struct{}, interval time.Duration, kick <-chan chan struct{}, pass func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			pass()
		case done := <-kick:
			pass()
			close(done)
		}
	}
}

// kickPass asks passLoop for a pass now and waits until it is done, ctx
// ends or the source is closed (stop).
func kickPass(ctx context.Context, stop <-chan struct{}, kick chan<- chan struct{}) error {
	done := make(chan struct{})
	select {
	case kick <- done:
	case <-stop:
		return fmt.Errorf("keys: sync: %w", watchq.ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
