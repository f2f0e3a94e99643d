//go:build !linux

package watchq

import "syscall"

// ebadslt is Linux's EBADSLT (57). Other systems have no such errno; the
// engine still reports a missing watch with Linux's number so that records
// and errors mean the same everywhere.
const ebadslt = syscall.Errno(57)
