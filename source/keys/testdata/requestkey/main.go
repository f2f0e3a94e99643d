// Command requestkey is a minimal /sbin/request-key for the vmtest guest:
// the kernel runs it (security/keys/request_key.c:call_sbin_request_key) as
//
//	/sbin/request-key create <key> <uid> <gid> <thread> <process> <session>
//
// and it instantiates the key under construction with the callout data
// given to request_key(2), as keyutils' "|/bin/cat" rule for debug:loop:*
// keys does, except that the callout "negate" negates the key for 30 s, as
// keyutils' rule for debug:* keys with that callout does.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	// KEYCTL_ASSUME_AUTHORITY changes only this thread's credentials.
	runtime.LockOSThread()
	if len(os.Args) < 3 || os.Args[1] != "create" {
		fmt.Fprintln(os.Stderr, "request-key: want create <key> ...")
		os.Exit(1)
	}
	key, err := strconv.Atoi(os.Args[2])
	if err != nil {
		os.Exit(1)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_ASSUME_AUTHORITY, key, 0, 0, 0); err != nil {
		fail(key, "assume authority", err)
	}
	buf := make([]byte, 4096)
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, unix.KEY_SPEC_REQKEY_AUTH_KEY, buf, 0)
	if err != nil {
		fail(key, "read callout", err)
	}
	payload := buf[:min(n, len(buf))]
	if string(payload) == "negate" {
		// As keyutils' rule for "debug:*" keys with callout "negate":
		// keyctl negate %k 30.
		if _, err := unix.KeyctlInt(unix.KEYCTL_NEGATE, key, 30, 0, 0); err != nil {
			fail(key, "negate", err)
		}
		return
	}
	var p unsafe.Pointer
	if len(payload) > 0 {
		p = unsafe.Pointer(&payload[0])
	}
	if _, _, e := unix.Syscall6(unix.SYS_KEYCTL, unix.KEYCTL_INSTANTIATE, uintptr(key), uintptr(p), uintptr(len(payload)), 0, 0); e != 0 {
		fail(key, "instantiate", e)
	}
}

func fail(key int, what string, err error) {
	fmt.Fprintf(os.Stderr, "request-key: %s: %v\n", what, err)
	unix.KeyctlInt(unix.KEYCTL_NEGATE, key, 30, 0, 0)
	os.Exit(1)
}
