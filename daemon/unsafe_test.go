//go:build linux

package daemon_test

import "unsafe"

// unsafePointer points at b's first byte, for atomics on a mapping.
func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
