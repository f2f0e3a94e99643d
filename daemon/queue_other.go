//go:build !linux

package daemon

import (
	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/kernel"
)

// queue is a client's queue. Off Linux no queue ever exists: connections
// are refused before a request (peerCred), and there are no packet-mode
// pipes (pipe2 O_DIRECT) to deliver a queue through.
type queue struct {
	id uint32        // immutable
	q  *watchq.Queue // immutable
}

// newQueue fails off Linux with an error matching kernel.ErrNotSupported.
func newQueue(c *conn, id uint32, wq *watchq.Queue, pages int) (*queue, int, error) {
	return nil, -1, &kernel.NotSupportedError{Op: "daemon: packet-mode pipes (pipe2 O_DIRECT)", Missing: kernel.MissingLinux}
}

func (q *queue) start() {}

func (q *queue) hold(pages, watches int) bool { return false }

func (q *queue) unhold(pages, watches int) {}

func (q *queue) reclaimDead() {}

func (q *queue) close(fromWatcher bool) {}

func (q *queue) stats() protocol.QueueStats { return protocol.QueueStats{} }
