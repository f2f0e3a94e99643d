//go:build !(linux && amd64)

package run

import (
	"context"
	"errors"
	"io"
	"syscall"
)

// Config configures Run.
type Config struct {
	Args        []string
	Env         []string
	Stderr      io.Writer
	HelperArgv0 string
	SyncSocket  string
	Daemon      string
}

// ErrUnsupported is Run on a system it does not support.
var ErrUnsupported = errors.New("run: watchq run needs Linux on x86-64")

// ExecError is PROG not found (Status 127) or not executable (126).
type ExecError struct {
	Msg    string
	Status int
}

func (e *ExecError) Error() string { return e.Msg }

// MaybeHelper does nothing here.
func MaybeHelper() {}

// Passthrough reports false: there is no kernel facility to pass to.
func Passthrough() bool { return false }

// Exec is unsupported here.
func Exec(_, _ []string) error { return ErrUnsupported }

// Run is unsupported here.
func Run(context.Context, Config) (syscall.WaitStatus, error) { return 0, ErrUnsupported }
