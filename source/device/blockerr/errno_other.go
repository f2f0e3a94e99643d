//go:build !linux

package blockerr

// The errnos of block/blk-core.c's blk_errors[] that have a seed subtype,
// as Linux numbers them on most architectures
// (include/uapi/asm-generic/errno*.h): the tracepoint reports Linux's
// numbers, which other systems' syscall package does not have (EREMOTEIO,
// EBADE) or numbers differently.
const (
	errETIMEDOUT int32 = 110
	errENOSPC    int32 = 28
	errENOLINK   int32 = 67
	errEREMOTEIO int32 = 121
	errEBADE     int32 = 52
	errENODATA   int32 = 61
	errEILSEQ    int32 = 84
	errENOMEM    int32 = 12
	errEBUSY     int32 = 16
	errEIO       int32 = 5
)
