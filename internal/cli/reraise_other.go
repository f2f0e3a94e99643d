//go:build !linux

package cli

import (
	"os"
	"os/signal"
	"syscall"
	"time"
)

// reraise ends this process by sig, as PROG ended.
func reraise(sig syscall.Signal) {
	signal.Reset(sig)
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second) // a signal that does not end the process: exit 128+sig
}
