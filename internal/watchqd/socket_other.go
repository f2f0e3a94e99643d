//go:build !linux

package watchqd

import (
	"log/slog"
	"net"

	"github.com/watchq/watchq/kernel"
)

// socket is a listening socket watchqd created; off Linux none is.
type socket struct {
	l *net.UnixListener
}

// createSocket fails off Linux, where the daemon cannot identify its
// peers (SO_PEERCRED) nor bind with a safe mode (socket.go): the error
// matches kernel.ErrNotSupported.
func createSocket(path string, mode uint32, log *slog.Logger) (*socket, error) {
	return nil, &kernel.NotSupportedError{Op: "watchqd: the daemon socket", Missing: kernel.MissingLinux}
}

// Close does nothing.
func (s *socket) Close() error { return nil }
