//go:build !linux

package daemon

import (
	"net"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
)

// peerCred fails off Linux: the daemon identifies a client by
// SO_PEERCRED, which only Linux has, and a client it cannot identify is
// refused (newConn fails, the connection is closed). The error matches
// kernel.ErrNotSupported.
func peerCred(c *net.UnixConn) (*watchq.Cred, error) {
	return nil, &kernel.NotSupportedError{Op: "daemon: peer credentials (SO_PEERCRED)", Missing: kernel.MissingLinux}
}

// clientNofile knows no client limit off Linux (0: only watchqd.conf's).
func clientNofile(pid int32) int { return 0 }
