//go:build !linux

package mount

import (
	"context"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// Source is the mount source; it exists on Linux only.
type Source struct{}

// Open fails with ErrNotSupported outside Linux.
func Open(context.Context, Config) (*Source, error) { return nil, ErrNotSupported }

// Backend returns Auto.
func (*Source) Backend() Backend { return Auto }

// Capabilities says nothing runs.
func (*Source) Capabilities() Capabilities {
	return Capabilities{Fanotify: ErrNotSupported, UniqueIDs: ErrNotSupported, FSErrors: ErrNotSupported}
}

// Stats returns zeros.
func (*Source) Stats() Stats { return Stats{} }

// MountPoint knows no mount.
func (*Source) MountPoint(uint64) (string, bool) { return "", false }

// WatchMount fails with ErrNotSupported.
func (*Source) WatchMount(*watchq.Queue, string, record.Tag, *watchq.Cred) error {
	return ErrNotSupported
}

// UnwatchMount fails with ErrNotSupported.
func (*Source) UnwatchMount(*watchq.Queue, string) error { return ErrNotSupported }

// WatchSuperblock fails with ErrNotSupported.
func (*Source) WatchSuperblock(*watchq.Queue, string, record.Tag, *watchq.Cred) error {
	return ErrNotSupported
}

// UnwatchSuperblock fails with ErrNotSupported.
func (*Source) UnwatchSuperblock(*watchq.Queue, string) error { return ErrNotSupported }

// Watches fails with ErrNotSupported.
func (*Source) Watches() (int, error) { return 0, ErrNotSupported }

// Sync fails with ErrNotSupported.
func (*Source) Sync(context.Context) error { return ErrNotSupported }

// Close does nothing.
func (*Source) Close() error { return nil }

// Resolver knows no mount outside Linux.
type Resolver struct{}

// NewResolver returns a resolver that knows nothing.
func NewResolver() *Resolver { return &Resolver{} }

// Note does nothing.
func (*Resolver) Note(record.Record) {}

// MountPoint knows no mount.
func (*Resolver) MountPoint(uint64) (string, bool) { return "", false }
