package daemon

import (
	"syscall"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
)

// KeySource is what the daemon needs of the key source (*keys.Source with
// the traced backend): KEYCTL_WATCH_KEY for a client, View checked in the
// client's context.
type KeySource interface {
	// WatchAs adds q's watch on key serial for watcher, after the
	// kernel's View check in watcher's context (keys.Source.WatchAs).
	WatchAs(q *watchq.Queue, serial int32, tag record.Tag, watcher *watchq.Cred) error
	// UnwatchAs removes q's watch on key serial, View checked as for
	// WatchAs.
	UnwatchAs(q *watchq.Queue, serial int32, watcher *watchq.Cred) error
}

// watchKey carries out watch-key, keyctl_watch_key for a client
// (security/keys/keyctl.c): the View check in the client's context, made
// by the key source for a watch and for a removal alike, then the watch,
// charged to the client's uid before it is added. The kernel's watch
// gets every record posted to the key from then on; so does this one
// (see policy.Policy.PostAllowed).
func (c *conn) watchKey(r protocol.WatchKey) ([]byte, int, error) {
	q, tag, remove, err := c.watchArgs(r.Queue, r.Tag)
	if err != nil {
		return nil, -1, err
	}
	ks := c.s.cfg.Keys
	if ks == nil {
		return nil, -1, &watchq.Errno{Errno: syscall.ENODEV, Reason: "watchqd runs without its key source " +
			"(the traced backend needs root, BPF, BTF and the syscall tracepoints)"}
	}
	if remove {
		if err := ks.UnwatchAs(q.q, r.Key, c.cred); err != nil {
			return nil, -1, err
		}
		q.unhold(0, 1)
		return nil, -1, nil
	}
	return nil, -1, c.watch(q, func() error { return ks.WatchAs(q.q, r.Key, tag, c.cred) })
}

// keyBackend is the server-stats KeyBackend value for the daemon's key
// source (Config.KeyBackend).
func (s *Server) keyBackend() uint64 {
	if s.cfg.Keys == nil {
		return protocol.KeyBackendNone
	}
	return s.cfg.KeyBackend
}
