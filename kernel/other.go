//go:build !linux

package kernel

import (
	"time"

	"github.com/watchq/watchq/record"
)

// errNotLinux is what every call returns off Linux.
var errNotLinux = &NotSupportedError{Op: "kernel: notification pipes", Missing: MissingLinux}

// Probe reports that the facility exists only on Linux.
func Probe() error { return errNotLinux }

// Pipe is a kernel notification pipe; off Linux none can be opened.
type Pipe struct{}

// Open fails off Linux with a *NotSupportedError.
func Open(flags int) (*Pipe, error) { return nil, errNotLinux }

// Fd returns -1.
func (p *Pipe) Fd() int { return -1 }

// SetSize fails off Linux.
func (p *Pipe) SetSize(notes int) error { return errNotLinux }

// SetFilter fails off Linux.
func (p *Pipe) SetFilter(f *record.Filter) error { return errNotLinux }

// SetRawFilter fails off Linux.
func (p *Pipe) SetRawFilter(b []byte) error { return errNotLinux }

// WatchKey fails off Linux.
func (p *Pipe) WatchKey(key int32, tag record.Tag) error { return errNotLinux }

// UnwatchKey fails off Linux.
func (p *Pipe) UnwatchKey(key int32) error { return errNotLinux }

// Read fails off Linux.
func (p *Pipe) Read(b []byte) (int, error) { return 0, errNotLinux }

// SetReadDeadline fails off Linux.
func (p *Pipe) SetReadDeadline(t time.Time) error { return errNotLinux }

// Queued fails off Linux.
func (p *Pipe) Queued() (int, error) { return 0, errNotLinux }

// Close does nothing and returns nil, as for a pipe already closed.
func (p *Pipe) Close() error { return nil }
