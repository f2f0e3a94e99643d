//go:build linux

package keys

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// WatchAs is Watch for a watcher in another process: watchqd's key watches.
// The kernel's View check (keyctl_watch_key's lookup_user_key(id,
// KEY_LOOKUP_CREATE, KEY_NEED_VIEW)) is made in watcher's context, not
// this process's: see ViewAs. serial must be resolved already (the
// watcher resolves special ids in its own context); 0 or a special id is
// EINVAL. The source must use the traced backend, which sees every
// process's key calls: the others only see what this process may view.
//
// As in the kernel, the check is made once, when the watch is set: the
// watch then receives every record posted to the key's list, whatever
// later permission changes (security/keys/keyctl.c:keyctl_watch_key adds
// the watch; kernel/watch_queue.c:__post_watch_notification checks only
// the filter and the LSM hook security_post_notification).
func (s *Source) WatchAs(q *watchq.Queue, serial int32, tag record.Tag, watcher *watchq.Cred) error {
	if err := s.checkAs(serial, watcher); err != nil {
		return err
	}
	d, err := ViewAs(serial, watcher)
	if err != nil {
		return err
	}
	return s.watchViewed(q, serial, tag, watcher, d, watcher)
}

// UnwatchAs is Unwatch for a watcher in another process: View is checked
// in watcher's context, as KEYCTL_WATCH_KEY with -1 checks it, so a
// watcher that may no longer view the key cannot unwatch it (EACCES) and
// its watch stays (closing its queue ends it).
func (s *Source) UnwatchAs(q *watchq.Queue, serial int32, watcher *watchq.Cred) error {
	if err := s.checkAs(serial, watcher); err != nil {
		return err
	}
	if _, err := ViewAs(serial, watcher); err != nil {
		return err
	}
	return s.unwatchViewed(q, serial)
}

// checkAs checks WatchAs's arguments.
func (s *Source) checkAs(serial int32, watcher *watchq.Cred) error {
	if s.isClosed() {
		return fmt.Errorf("keys: watch key %d: %w", serial, watchq.ErrClosed)
	}
	if watcher == nil {
		return errors.New("keys: WatchAs: nil watcher")
	}
	if serial <= 0 {
		return &watchq.Errno{Errno: unix.EINVAL, Reason: fmt.Sprintf("key id %d is not a serial: resolve special ids in the watcher's context (KEYCTL_GET_KEYRING_ID)", serial)}
	}
	if s.backend != Traced {
		return &watchq.Errno{Errno: unix.EOPNOTSUPP, Reason: fmt.Sprintf("watching keys for another process needs the traced backend; this source uses %v", s.backend)}
	}
	return nil
}

// ViewAs makes lookupView's check (View, revocation, expiry,
// instantiation) in watcher's context: on a thread of its own whose uids,
// gids and supplementary groups it sets to watcher's (key_task_permission
// compares the key's uid with cred->fsuid, its gid with cred->fsgid and
// the groups), and which first joins a new, empty session keyring. The
// thread ends with the check.
//
// Possession (the possessor permission bits) cannot be evaluated for
// another process: it depends on the watcher's own thread, process and
// session keyrings (search_process_keyrings_rcu), which are not this
// process's. The thread possesses nothing of the watcher's, so a key whose
// View the watcher has only as its possessor is refused (EACCES, with that
// reason): erring on the side of refusing. The thread does possess this
// process's process keyring and request_key authorisation, if it has any;
// then every check is refused.
func ViewAs(serial int32, watcher *watchq.Cred) (Description, error) {
	var d Description
	err := runAs(watcher, func(sess, thread int32) error {
		if serial == sess || serial == thread {
			return &watchq.Errno{Errno: unix.EACCES, Reason: fmt.Sprintf("key %d: the checking thread's own keyring", serial)}
		}
		var err error
		d, err = lookupView(serial)
		if errors.Is(err, unix.EACCES) {
			return &watchq.Errno{Errno: unix.EACCES, Reason: fmt.Sprintf("key %d: uid %d gid %d may not view it "+
				"(its user, group and other permissions do not grant View; watchqd cannot evaluate "+
				"possession, so a key viewable only by its possessor is refused)", serial, watcher.UID, watcher.GID)}
		}
		return err
	})
	return d, err
}

// runAs runs f on a thread of its own whose session keyring is new and
// empty and whose credentials are w's (ViewAs says why); f gets the
// thread's session and thread keyring (0: none), which it must not take
// for the watcher's. The thread ends with f.
func runAs(w *watchq.Cred, f func(sess, thread int32) error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the changed thread exits with the goroutine
		ch <- runAsLocked(w, f)
	}()
	return <-ch
}

// runAsLocked is runAs on the locked thread.
func runAsLocked(w *watchq.Cred, f func(sess, thread int32) error) error {
	// KEYCTL_JOIN_SESSION_KEYRING with a NULL name: a new anonymous
	// session keyring for this thread only (join_session_keyring commits
	// the thread's own cred), so the check does not possess this
	// process's session keyring and what it holds. (A name, even "",
	// would join a shared named keyring.)
	sess, _, e := unix.RawSyscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
	if e != 0 {
		return &Error{Op: "keyctl(KEYCTL_JOIN_SESSION_KEYRING)", Key: 0, Err: syscall.Errno(e)}
	}
	for _, id := range []int{unix.KEY_SPEC_PROCESS_KEYRING, unix.KEY_SPEC_REQKEY_AUTH_KEY} {
		if _, err := unix.KeyctlGetKeyringID(id, false); err == nil {
			return &watchq.Errno{Errno: unix.EACCES, Reason: "watchqd holds a process keyring or a request_key " +
				"authorisation and cannot check View in another context without possessing it"}
		}
	}
	thread, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_THREAD_KEYRING, false)
	if err != nil {
		thread = 0
	}
	if err := setCredsThread(w); err != nil {
		return fmt.Errorf("keys: taking the watcher's credentials: %w", err)
	}
	return f(int32(sess), int32(thread))
}

// setCredsThread sets the calling thread's (not the process's: raw system
// calls, not Go's all-threads syscall.Setuid) groups, gids and uids to c's.
func setCredsThread(c *watchq.Cred) error {
	gs := make([]uint32, len(c.Groups))
	copy(gs, c.Groups)
	var p unsafe.Pointer
	if len(gs) > 0 {
		p = unsafe.Pointer(&gs[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", syscall.Errno(e))
	}
	runtime.KeepAlive(gs)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(c.GID), uintptr(c.GID), uintptr(c.GID)); e != 0 {
		return fmt.Errorf("setresgid: %w", syscall.Errno(e))
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(c.UID), uintptr(c.UID), uintptr(c.UID)); e != 0 {
		return fmt.Errorf("setresuid: %w", syscall.Errno(e))
	}
	return nil
}
