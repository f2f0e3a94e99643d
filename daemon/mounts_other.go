//go:build !linux

package daemon

import (
	"syscall"

	"github.com/watchq/watchq"
)

// namespace fails off Linux: mount namespaces are Linux's.
func (c *conn) namespace() (Namespace, error) {
	return Namespace{FD: -1}, &watchq.Errno{Errno: syscall.EOPNOTSUPP, Reason: "mount namespaces are Linux's"}
}

// closeNamespace does nothing off Linux.
func closeNamespace(Namespace) {}
