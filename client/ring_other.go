//go:build !linux

package client

import (
	"context"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
)

// ringReader is a ring queue's consumer; off Linux there are none.
type ringReader struct{}

// CreateRingQueue fails off Linux with an error matching
// kernel.ErrNotSupported.
func (c *Client) CreateRingQueue(ctx context.Context, size, pages int) (*Queue, error) {
	return nil, &kernel.NotSupportedError{Op: "client: shared-memory rings (memfd, eventfd)", Missing: kernel.MissingLinux}
}

func (q *Queue) ringRead(ctx context.Context, buf []byte, one bool) (int, error) {
	return 0, watchq.ErrClosed
}

func (rr *ringReader) close()     {}
func (rr *ringReader) wakeClose() {}
