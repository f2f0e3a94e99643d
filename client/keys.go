package client

import (
	"context"

	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys"
)

// WatchKey is KEYCTL_WATCH_KEY through watchqd: q receives the records of
// key id with tag. A special id (keys.SpecSession, @s, ...) is resolved
// here, in the calling thread's context, created if need be, as the
// kernel's lookup_user_key(id, KEY_LOOKUP_CREATE, ...) would (see
// keys.Resolve); the daemon gets the serial. The daemon checks View in
// this process's context (uid, gid and groups as the socket says), except
// possession: a key this process may view only as its possessor is
// refused (EACCES), as are keys it may not view. ENODEV: the daemon has
// no key source.
func (q *Queue) WatchKey(ctx context.Context, id int32, tag record.Tag) error {
	serial, err := keys.Resolve(id)
	if err != nil {
		return err
	}
	_, _, err = q.c.do(ctx, protocol.WatchKey{Queue: q.id, Key: serial, Tag: record.TagArg(tag)})
	return err
}

// UnwatchKey removes q's watch on key id (resolved as for WatchKey); a
// 16-byte removal record carrying the serial follows. EBADSLT: no watch;
// EACCES: this process may no longer view the key, and the watch stays,
// as with KEYCTL_WATCH_KEY -1.
func (q *Queue) UnwatchKey(ctx context.Context, id int32) error {
	serial, err := keys.Resolve(id)
	if err != nil {
		return err
	}
	_, _, err = q.c.do(ctx, protocol.WatchKey{Queue: q.id, Key: serial, Tag: record.RemoveWatch})
	return err
}

// KeyBackend returns the backend of the daemon's key source, from
// server-stats: protocol.KeyBackendTraced, ...; KeyBackendNone when the
// daemon has none (or predates the field).
func (c *Client) KeyBackend(ctx context.Context) (uint64, error) {
	body, _, err := c.do(ctx, protocol.ServerStatsRequest{})
	if err != nil {
		return 0, err
	}
	st, err := protocol.ParseServerStats(body)
	return st.KeyBackend, err
}
