//go:build !linux

package device

import (
	"context"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/record"
)

// errNotLinux is what the device source says off Linux: kernel uevents
// and the block tracepoints exist only there. It matches
// kernel.ErrNotSupported.
var errNotLinux error = &kernel.NotSupportedError{Op: "device: kernel uevents and tracepoints", Missing: kernel.MissingLinux}

// Source is the device notification source; off Linux none can be opened.
type Source struct{}

// Open fails off Linux with an error matching kernel.ErrNotSupported.
func Open(ctx context.Context, cfg Config) (*Source, error) { return nil, errNotLinux }

// Capabilities reports that nothing runs.
func (s *Source) Capabilities() Capabilities {
	return Capabilities{Uevents: errNotLinux, BlockErrors: errNotLinux, USBReset: errNotLinux}
}

// Watch fails off Linux with an error matching kernel.ErrNotSupported.
func (s *Source) Watch(q *watchq.Queue, tag record.Tag, watcher *watchq.Cred) error {
	return errNotLinux
}

// Unwatch fails off Linux with an error matching kernel.ErrNotSupported.
func (s *Source) Unwatch(q *watchq.Queue) error { return errNotLinux }

// Stats returns zero counters.
func (s *Source) Stats() Stats { return Stats{} }

// Close does nothing and returns nil.
func (s *Source) Close() error { return nil }
