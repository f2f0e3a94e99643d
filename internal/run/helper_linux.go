//go:build linux && amd64

package run

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// helperEnv marks a process started by Run as its helper; the value is
// the fd of the socket to the supervisor.
const helperEnv = "WATCHQ_RUN_HELPER"

// MaybeHelper turns the process into the supervisor's helper when Run
// started it: on its one locked OS thread it sets no_new_privs, installs
// the filter, sends its listener to the supervisor, waits for the
// go-ahead and executes PROG (os.Args[1:]) from the same thread, so that
// PROG and everything it starts carry the filters. It returns at once in
// any other process. Programs that call Run must call MaybeHelper first
// thing in main (watchq's CLI does; so do the tests).
//
// The filters apply per thread: installed on a thread that is not the one
// calling execve, PROG would run unfiltered (the exec'ing thread keeps its
// own filters, the others die), hence LockOSThread before anything else.
func MaybeHelper() {
	v, ok := os.LookupEnv(helperEnv)
	if !ok {
		return
	}
	runtime.LockOSThread()
	os.Unsetenv(helperEnv)
	var fd int
	if _, err := fmt.Sscanf(v, "%d", &fd); err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "watchq run: bad %s=%q\n", helperEnv, v)
		os.Exit(127)
	}
	os.Exit(helper(fd, os.Args[1:]))
}

func helper(sock int, args []string) int {
	fail := func(format string, a ...any) int {
		unix.Sendmsg(sock, []byte("e:"+fmt.Sprintf(format, a...)), nil, nil, 0)
		return 127
	}
	if len(args) == 0 {
		return fail("no program")
	}
	env := os.Environ()
	path, err := lookPath(args[0], env)
	if err != nil {
		ee := execError(err)
		return fail("%d:%s", ee.Status, ee.Msg)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("prctl(PR_SET_NO_NEW_PRIVS): %v", err)
	}
	prog, err := filter()
	if err != nil {
		return fail("%v", err)
	}
	// Waits are killable once the supervisor has received the
	// notification: a signal must not restart a half-served pipe2 or
	// SET_SIZE (nor make it fail with EINTR, which the kernel's never do).
	lfd, err := installFilter(prog, unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
	if err != nil {
		return fail("seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER|WAIT_KILLABLE_RECV): %v (needs Linux 5.19 or later)", err)
	}
	if err := unix.Sendmsg(sock, []byte("ok"), unix.UnixRights(lfd), nil, 0); err != nil {
		return 127
	}
	unix.Close(lfd)
	var b [1]byte
	if n, err := unix.Read(sock, b[:]); err != nil || n != 1 {
		return 127 // the supervisor went away
	}
	unix.Close(sock)
	err = syscall.Exec(path, args, env)
	fmt.Fprintf(os.Stderr, "watchq run: exec %s: %v\n", path, err)
	if err == syscall.ENOENT {
		return 127
	}
	return 126
}
