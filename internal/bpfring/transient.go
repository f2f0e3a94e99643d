package bpfring

import (
	"errors"
	"syscall"
)

// Transient reports whether err says the process or the system was short
// of something at the moment (descriptors, memory, an interrupted call)
// rather than anything about what the kernel supports or allows. A tracer
// that fails so must not be reported as unsupported, and a caller must
// not settle on running without it: trying again may work.
func Transient(err error) bool {
	for _, e := range [...]syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS, syscall.EAGAIN, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
