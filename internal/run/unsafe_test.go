//go:build linux && amd64 && !vmtest

package run_test

import "unsafe"

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
