package blockerr

import "syscall"

// The errnos of block/blk-core.c's blk_errors[] that have a seed subtype,
// as the running kernel numbers them (they differ on a few architectures).
const (
	errETIMEDOUT = int32(syscall.ETIMEDOUT)
	errENOSPC    = int32(syscall.ENOSPC)
	errENOLINK   = int32(syscall.ENOLINK)
	errEREMOTEIO = int32(syscall.EREMOTEIO)
	errEBADE     = int32(syscall.EBADE)
	errENODATA   = int32(syscall.ENODATA)
	errEILSEQ    = int32(syscall.EILSEQ)
	errENOMEM    = int32(syscall.ENOMEM)
	errEBUSY     = int32(syscall.EBUSY)
	errEIO       = int32(syscall.EIO)
)
