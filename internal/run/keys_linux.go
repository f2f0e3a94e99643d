//go:build linux && amd64

package run

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// keyctl(KEYCTL_WATCH_KEY, id, fd, tag) under the shim.
//
// The key id must be resolved, and its View permission checked, in the
// calling thread's context, exactly as keyctl_watch_key's
// lookup_user_key(id, KEY_LOOKUP_CREATE, KEY_NEED_VIEW) does it: @t, @p and
// @s are that thread's, possession is judged from its keyrings, and
// looking up @s without a session keyring joins a new one *in the caller*.
// No supervisor-side lookup can do that (it has its own keyrings; a
// program that joined another session would silently watch the wrong
// one), so the supervisor makes the thread itself run the lookups:
//
//  1. it attaches to the trapped thread with PTRACE_SEIZE and queues a
//     PTRACE_INTERRUPT (the thread sleeps killably in the trapped call, so
//     the interrupt waits);
//  2. it answers the notification with SECCOMP_USER_NOTIF_FLAG_CONTINUE:
//     the kernel's own keyctl(KEYCTL_WATCH_KEY) runs and, the kernel
//     lacking key notifications, fails at once with EOPNOTSUPP, and the
//     thread stops for the interrupt on its way back to user space;
//  3. from that stop it runs keyctl(KEYCTL_GET_KEYRING_ID, id, 1),
//     keyctl(KEYCTL_READ, serial, NULL, 0) and keyctl(KEYCTL_DESCRIBE,
//     serial, NULL, 0) in the thread, from the thread's own syscall
//     instruction, sets up the watch, stores the result in the thread's
//     return register and detaches. The thread returns from its keyctl
//     with that result, as from the kernel's.
//
// All ptrace requests come from one locked OS thread (the tracer), which
// also reaps PROG, so no wait of the supervisor's consumes a ptrace stop.

// errTaskGone means the trapped task exited while it was being served.
var errTaskGone = errors.New("task exited")

// keyLoop is the tracer thread. It also reaps: PROG, and the orphans of
// its tree that the kernel hands to the supervisor (a child subreaper, so
// that they stay its descendants, which Yama's ptrace_scope 1 requires).
func (s *supervisor) keyLoop(started chan<- struct{}) {
	defer s.wg.Done()
	runtime.LockOSThread() // ptrace is per tracer thread; never unlocked
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)
	close(started) // SIGCHLD is caught: PROG may start
	reap := func() {
		for {
			var ws unix.WaitStatus
			p, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil)
			if err != nil || p <= 0 {
				return
			}
			if p == s.pid && (ws.Exited() || ws.Signaled()) {
				s.reapedPROG(ws)
			}
		}
	}
	reap() // PROG may have gone before the handler was in place
	for {
		select {
		case <-s.done:
			return
		case <-chld:
			reap()
		case n := <-s.keyCalls:
			s.serveKeyCall(n)
			reap()
		}
	}
}

// reapedPROG reports PROG's end, once. Tracer thread only.
func (s *supervisor) reapedPROG(ws unix.WaitStatus) {
	if !s.progReaped {
		s.progReaped = true
		s.exited <- ws
	}
}

// serveKeyCall serves one trapped keyctl.
func (s *supervisor) serveKeyCall(n *seccompNotif) {
	a, _ := classify(n.Data.Arch, n.Data.Nr)
	if a == abiX32 && !x32Enabled() {
		_ = notifSend(s.lfd, n.ID, 0, unix.ENOSYS, false)
		return
	}
	id := int32(n.Data.Args[1])
	fd := int32(n.Data.Args[2])
	tag := int32(n.Data.Args[3])
	if tag < -1 || tag > 255 {
		_ = notifSend(s.lfd, n.ID, 0, unix.EINVAL, false)
		return
	}
	err := s.inTask(n, a, func(t *tracee) int64 { return s.watchKey(t, id, fd, tag) })
	if err == nil || err == errTaskGone {
		return
	}
	// The thread could not be entered: refuse, clearly, rather than
	// resolve the id anywhere else.
	s.sayOnce("ptrace:"+err.Error(), "keyctl(KEYCTL_WATCH_KEY) in pid %d refused (EPERM): its key id must be resolved in its own context, through ptrace, which failed: %v (is it traced by a debugger, non-dumpable, or does Yama's ptrace_scope forbid it?)", n.Pid, err)
	if notifIDValid(s.lfd, n.ID) {
		_ = notifSend(s.lfd, n.ID, 0, unix.EPERM, false)
	}
}

// watchKey is keyctl_watch_key after its tag check, run while the calling
// thread is held in the trapped call.
func (s *supervisor) watchKey(t *tracee, id, fd, tag int32) int64 {
	nr := keyctlNr(t.abi)
	serial := id
	if id <= 0 {
		r, err := t.syscall(nr, unix.KEYCTL_GET_KEYRING_ID, uint64(uint32(id)), 1)
		if err != nil {
			return -int64(unix.EINTR)
		}
		if r < 0 {
			return r
		}
		serial = int32(r)
	}
	// lookup_user_key without KEY_LOOKUP_PARTIAL: waits for construction
	// and validates (revoked, expired, negative). KEYCTL_READ looks the
	// key up that way before its permission check, whose EACCES and
	// EOPNOTSUPP (no read method) say nothing about the lookup.
	r, err := t.syscall(nr, unix.KEYCTL_READ, uint64(uint32(serial)), 0)
	if err != nil {
		return -int64(unix.EINTR)
	}
	if r < 0 && r != -int64(unix.EACCES) && r != -int64(unix.EOPNOTSUPP) {
		return r
	}
	// KEY_NEED_VIEW, possession judged from the thread's keyrings.
	if r, err = t.syscall(nr, unix.KEYCTL_DESCRIBE, uint64(uint32(serial)), 0); err != nil {
		return -int64(unix.EINTR)
	}
	if r < 0 {
		return r
	}
	// get_watch_queue: a bad fd or one that is not a queue is EINVAL.
	q := s.queueOfFd(t.tid, fd)
	if q == nil {
		return -int64(unix.EINVAL)
	}
	cred, err := taskCred(t.tid)
	if err != nil {
		return -int64(unix.ESRCH)
	}
	src, err := s.openKeySource()
	if err != nil {
		return -int64(unix.EOPNOTSUPP)
	}
	if tag >= 0 {
		err = src.Watch(q.eq, serial, record.Tag(tag), cred)
		if err == nil {
			q.mu.Lock()
			q.keys[serial] = true
			q.mu.Unlock()
		} else if errors.Is(err, unix.EACCES) {
			s.sayOnce(fmt.Sprintf("view:%d", serial), "key %d: pid %d may view it but watchq run's key source may not, so it cannot watch it (EACCES)", serial, t.tid)
		}
	} else {
		err = src.Unwatch(q.eq, serial)
		if err == nil {
			q.mu.Lock()
			delete(q.keys, serial)
			q.mu.Unlock()
		}
	}
	if err != nil {
		if errors.Is(err, watchq.ErrClosed) {
			return -int64(unix.EINVAL)
		}
		return -int64(errnoOf(err))
	}
	return 0
}

// tracee is a thread held by ptrace in a trapped call.
type tracee struct {
	tid   int
	abi   abi
	saved unix.PtraceRegs // at the interrupt stop
	insn  uint64          // address of the syscall instruction
	sigs  []unix.Signal   // signals that arrived meanwhile, re-sent after detach
	s     *supervisor
}

// inTask attaches to the thread of notification n, lets the trapped call
// fail in the kernel, and runs fn with the thread held at the interrupt
// stop that follows; the call returns fn's result. On an error before the
// notification was answered, the caller answers it.
func (s *supervisor) inTask(n *seccompNotif, a abi, fn func(*tracee) int64) error {
	tid := int(n.Pid)
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(tid), 0, unix.PTRACE_O_TRACESYSGOOD, 0, 0); e != 0 {
		return fmt.Errorf("ptrace(PTRACE_SEIZE, %d): %w", tid, e)
	}
	t := &tracee{tid: tid, abi: a, s: s}
	if err := unix.PtraceInterrupt(tid); err != nil {
		unix.PtraceDetach(tid)
		return fmt.Errorf("ptrace(PTRACE_INTERRUPT): %w", err)
	}
	if err := notifSend(s.lfd, n.ID, 0, 0, true); err != nil {
		// The thread left the call (killed): nothing to answer.
		unix.PtraceDetach(tid)
		return errTaskGone
	}
	if err := t.waitStop(func(ws unix.WaitStatus) bool { return ws.TrapCause() == unix.PTRACE_EVENT_STOP }); err != nil {
		return err
	}
	if err := unix.PtraceGetRegs(tid, &t.saved); err != nil {
		t.detach()
		return errTaskGone
	}
	// The thread must be just out of the trapped call: its number in
	// orig_ax, ip right after the syscall instruction.
	if regsOrigNr(&t.saved) != int64(n.Data.Nr) || regsIP(&t.saved) != n.Data.InstructionPointer {
		t.detach()
		s.sayOnce("notincall", "keyctl(KEYCTL_WATCH_KEY) in thread %d: not at the trapped call after the interrupt; its result is the kernel's", tid)
		return errTaskGone
	}
	t.insn = regsIP(&t.saved) - 2
	var insn [8]byte
	ok := false
	if _, err := unix.PtracePeekText(tid, uintptr(t.insn), insn[:]); err == nil {
		for _, i := range syscallInsns {
			ok = ok || (insn[0] == i[0] && insn[1] == i[1])
		}
	}
	res := -int64(unix.EPERM)
	if ok {
		res = fn(t)
	} else {
		s.sayOnce("noinsn", "keyctl(KEYCTL_WATCH_KEY) in thread %d: no syscall instruction before %#x; refused (EPERM)", tid, t.insn+2)
	}
	if t.gone() {
		return errTaskGone
	}
	r := t.saved
	setRegsResult(&r, res)
	setRegsOrigNr(&r, -1) // no restart: the call is done
	_ = unix.PtraceSetRegs(tid, &r)
	t.detach()
	return nil
}

func (t *tracee) gone() bool { return t.tid == 0 }

// detach lets the thread go and re-sends the signals held back meanwhile.
func (t *tracee) detach() {
	if t.gone() {
		return
	}
	unix.PtraceDetach(t.tid)
	for _, sig := range t.sigs {
		unix.Tgkill(t.s.pid, t.tid, sig)
	}
}

// waitStop waits for a stop that want accepts. Signal-delivery stops on the
// way are held back (re-sent on detach); an exit ends the session.
func (t *tracee) waitStop(want func(unix.WaitStatus) bool) error {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(t.tid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.tid = 0
			return errTaskGone
		}
		if ws.Exited() || ws.Signaled() {
			if t.tid == t.s.pid {
				t.s.reapedPROG(ws)
			}
			t.tid = 0
			return errTaskGone
		}
		if !ws.Stopped() {
			continue
		}
		if want(ws) {
			return nil
		}
		sig := ws.StopSignal()
		resume := unix.PtraceSyscall
		if ws.TrapCause() == unix.PTRACE_EVENT_STOP {
			// A group stop (SIGSTOP and friends) while held: it is lost
			// for this thread; keep going.
			sig = 0
		} else if sig&0x80 == 0 && sig != unix.SIGTRAP {
			t.sigs = append(t.sigs, sig)
		}
		if err := resume(t.tid, 0); err != nil {
			t.tid = 0
			return errTaskGone
		}
	}
}

// syscall runs syscall nr with args in the held thread, from its own
// syscall instruction, and returns the result (negative errno).
func (t *tracee) syscall(nr uint64, args ...uint64) (int64, error) {
	if t.gone() {
		return 0, errTaskGone
	}
	var a [4]uint64
	copy(a[:], args)
	r := t.saved
	setRegsIP(&r, t.insn)
	setSyscallRegs(&r, t.abi, nr, a)
	setRegsOrigNr(&r, -1)
	if err := unix.PtraceSetRegs(t.tid, &r); err != nil {
		return 0, err
	}
	sysStop := func(ws unix.WaitStatus) bool { return ws.StopSignal() == unix.SIGTRAP|0x80 }
	for range 2 { // syscall-enter-stop, then syscall-exit-stop
		if err := unix.PtraceSyscall(t.tid, 0); err != nil {
			t.tid = 0
			return 0, errTaskGone
		}
		if err := t.waitStop(sysStop); err != nil {
			return 0, err
		}
	}
	if err := unix.PtraceGetRegs(t.tid, &r); err != nil {
		return 0, err
	}
	return syscallResult(&r, t.abi), nil
}
