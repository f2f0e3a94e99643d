package cli

import (
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// reraise ends this process by sig, as PROG ended, without a core dump.
// The signal goes to the calling thread, so it is handled (and the
// process ends) on the way back from tgkill, before anything else runs.
func reraise(sig syscall.Signal) {
	_ = syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
	signal.Reset(sig)
	runtime.LockOSThread()
	_ = syscall.Tgkill(os.Getpid(), syscall.Gettid(), sig)
	time.Sleep(time.Second) // a signal that does not end the process: exit 128+sig
}
