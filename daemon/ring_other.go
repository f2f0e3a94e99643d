//go:build !linux

package daemon

import (
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/kernel"
)

// createRing fails off Linux with an error matching
// kernel.ErrNotSupported: no memfd, seals or eventfd.
func (c *conn) createRing(r protocol.CreateRing) ([]byte, []int, error) {
	return nil, nil, &kernel.NotSupportedError{Op: "daemon: shared-memory rings (memfd_create, eventfd)", Missing: kernel.MissingLinux}
}
