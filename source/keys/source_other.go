//go:build !linux

package keys

import (
	"context"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
)

// errNotLinux is what the key source says off Linux: Linux keyrings exist
// only there. It matches kernel.ErrNotSupported.
var errNotLinux error = &kernel.NotSupportedError{Op: "keys: Linux keyrings", Missing: kernel.MissingLinux}

// Source watches keys for engine queues; off Linux none can be opened.
type Source struct{}

// Open fails off Linux with an error matching kernel.ErrNotSupported.
func Open(ctx context.Context, cfg Config) (*Source, error) { return nil, errNotLinux }

// Resolve fails off Linux with an error matching kernel.ErrNotSupported.
func Resolve(id int32) (int32, error) { return 0, errNotLinux }

// Backend returns Auto: no backend runs off Linux.
func (s *Source) Backend() Backend { return Auto }

// Watch fails off Linux with an error matching kernel.ErrNotSupported.
func (s *Source) Watch(q *watchq.Queue, id int32, tag record.Tag, watcher *watchq.Cred) error {
	return errNotLinux
}

// Unwatch fails off Linux with an error matching kernel.ErrNotSupported.
func (s *Source) Unwatch(q *watchq.Queue, id int32) error { return errNotLinux }

// Watched returns 0.
func (s *Source) Watched() int { return 0 }

// Sync fails off Linux with an error matching kernel.ErrNotSupported.
func (s *Source) Sync(ctx context.Context) error { return errNotLinux }

// Close does nothing and returns nil.
func (s *Source) Close() error { return nil }

// Fallback returns nil: off Linux there is no backend to fall back from.
func (s *Source) Fallback() error { return nil }

// WatchAs fails off Linux with an error matching kernel.ErrNotSupported.
func (s *Source) WatchAs(q *watchq.Queue, serial int32, tag record.Tag, watcher *watchq.Cred) error {
	return errNotLinux
}

// UnwatchAs fails off Linux with an error matching kernel.ErrNotSupported.
func (s *Source) UnwatchAs(q *watchq.Queue, serial int32, watcher *watchq.Cred) error {
	return errNotLinux
}

// ViewAs fails off Linux with an error matching kernel.ErrNotSupported.
func ViewAs(serial int32, watcher *watchq.Cred) (Description, error) {
	return Description{}, errNotLinux
}
