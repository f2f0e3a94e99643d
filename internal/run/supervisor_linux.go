//go:build linux && amd64

package run

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/source/keys"
	"golang.org/x/sys/unix"
)

// supervisor is one watchq run: the listeners, the FUSE server, the
// queues, the key source.
type supervisor struct {
	cfg    Config
	stderr io.Writer
	eng    *watchq.Engine
	rs     *watchq.ReadySet
	fuse   *fuseServer
	lfd    int // the filter's listener
	pid    int // PROG
	helper int // socket to the helper until PROG is executed
	stop   [2]int

	mu        sync.Mutex
	queues    map[uint64]*kqueue
	byEQ      map[*watchq.Queue]*kqueue
	handles   map[uint64]*handle
	pending   map[uint64]*kqueue // blocked reads by FUSE unique
	nextID    uint64
	nextFH    uint64
	src       *keys.Source // opened by the first key watch
	srcErr    error
	daemon    *client.Client // dialled by the first device watch
	daemonErr error
	said      map[string]bool // stderr messages said once
	change    chan struct{}

	wg         sync.WaitGroup       // the loops and the calls being served
	exited     chan unix.WaitStatus // PROG's status, once
	progReaped bool                 // PROG's status was sent; tracer thread only
	keyCalls   chan *seccompNotif   // keyctl notifications, to the tracer thread
	done       chan struct{}        // closed by cleanup
}

// Passthrough reports whether PROG would see the facility without a
// supervisor: the running kernel has it (notification pipes and key
// notifications), or this process runs under watchq run already (its
// notification pipes are a supervisor's FUSE files; a second supervisor
// could not install its filter: a task may carry only one filter with a
// listener). watchq run then runs PROG as it is.
func Passthrough() bool { return kernel.Probe() == nil || servedAlready() }

// servedAlready reports whether pipe2(O_NOTIFICATION_PIPE) returns a FUSE
// file: a watchq run supervisor serves this process.
func servedAlready() bool {
	var p [2]int
	if unix.Pipe2(p[:], kernel.ONotificationPipe|unix.O_CLOEXEC) != nil {
		return false
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	var st unix.Statfs_t
	return unix.Fstatfs(p[0], &st) == nil && st.Type == unix.FUSE_SUPER_MAGIC
}

// Exec replaces this process with args[0] (looked up in $PATH), as watchq
// run does when the kernel has the facility.
func Exec(args, env []string) error {
	path, err := lookPath(args[0], env)
	if err != nil {
		return execError(err)
	}
	if err := syscall.Exec(path, args, env); err != nil {
		return execError(fmt.Errorf("exec %s: %w", path, err))
	}
	return nil
}

// Run runs cfg.Args under the supervisor and returns PROG's wait status
// once PROG has exited and no process holds one of its queues any more.
// It makes this process a child subreaper and reaps every child it gets;
// it ignores SIGINT and SIGQUIT and passes SIGTERM, SIGHUP, SIGUSR1,
// SIGUSR2 and SIGWINCH on to PROG while it runs.
// It needs a kernel with seccomp user notification (5.19 or later for the
// flags used), FUSE, and ptrace access to PROG (see docs/run.md).
func Run(ctx context.Context, cfg Config) (syscall.WaitStatus, error) {
	if len(cfg.Args) == 0 {
		return 0, errors.New("run: no program")
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // after cleanup: the wake loop ends
	s := &supervisor{
		cfg: cfg, stderr: cfg.Stderr, lfd: -1, stop: [2]int{-1, -1},
		keyCalls: make(chan *seccompNotif), done: make(chan struct{}),
		eng: watchq.NewEngine(watchq.Config{}), rs: watchq.NewReadySet(),
		queues: make(map[uint64]*kqueue), byEQ: make(map[*watchq.Queue]*kqueue),
		handles: make(map[uint64]*handle), pending: make(map[uint64]*kqueue),
		said: make(map[string]bool), change: make(chan struct{}, 1),
		exited: make(chan unix.WaitStatus, 1),
	}
	if s.stderr == nil {
		s.stderr = os.Stderr
	}
	defer s.cleanup()
	if err := checkNotifSizes(); err != nil {
		return 0, err
	}
	fs, err := mountFUSE(s)
	if err != nil {
		return 0, err
	}
	s.fuse = fs
	if err := unix.Pipe2(s.stop[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return 0, err
	}
	if cfg.SyncSocket != "" {
		if err := s.listenSync(ctx, cfg.SyncSocket); err != nil {
			return 0, err
		}
	}

	// Ignore the terminal's interrupt and quit (PROG, in the same process
	// group, gets them and ends; the supervisor must outlive it) and pass
	// other termination signals on.
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
	fwd := make(chan os.Signal, 8)
	signal.Notify(fwd, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	defer signal.Stop(fwd)

	// Orphans of PROG's tree come to the supervisor, not init: they stay
	// its descendants (ptrace under Yama's ptrace_scope 1), and it reaps
	// them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return 0, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	if err := s.startHelper(); err != nil {
		return 0, err
	}
	go s.wakeLoop(ctx)
	s.wg.Add(2)
	go s.recvLoop()
	started := make(chan struct{})
	go s.keyLoop(started)
	<-started
	if err := s.goHelper(); err != nil {
		unix.Kill(s.pid, unix.SIGKILL)
		return 0, err
	}

	var status unix.WaitStatus
	progDone := false
	ctxDone := ctx.Done()
	for {
		if progDone && (s.openHandles() == 0 || ctxDone == nil) {
			return syscall.WaitStatus(status), ctx.Err()
		}
		select {
		case status = <-s.exited:
			progDone = true
		case sig := <-fwd:
			if !progDone {
				_ = unix.Kill(s.pid, sig.(syscall.Signal))
			}
		case <-s.change:
		case <-ctxDone:
			if !progDone {
				// PROG goes first; its status still comes.
				_ = unix.Kill(s.pid, unix.SIGKILL)
				ctxDone = nil
				continue
			}
			return syscall.WaitStatus(status), ctx.Err()
		}
	}
}

// Config configures Run.
type Config struct {
	// Args is PROG and its arguments; PROG is looked up in Env's PATH.
	Args []string
	// Env is PROG's environment; nil means this process's.
	Env []string
	// Stderr receives the supervisor's own messages (nil: os.Stderr).
	Stderr io.Writer
	// HelperArgv0 is argv[0] for the helper the supervisor starts from
	// /proc/self/exe ("": os.Args[0]). The helper must call MaybeHelper
	// before anything else.
	HelperArgv0 string
	// SyncSocket, when set, is a Unix socket path the supervisor listens
	// on: a line "sync" is answered "ok" once every key change made before
	// it has been posted (the poll backend runs a pass) and handed to the
	// readers and pollers blocked on it. Scripts and tests use it to make
	// each step's records distinct.
	SyncSocket string
	// Daemon is watchqd's socket for device watches ("" means
	// client.DefaultSocket).
	Daemon string
}

func (s *supervisor) changed() {
	select {
	case s.change <- struct{}{}:
	default:
	}
}

func (s *supervisor) openHandles() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.handles)
}

// sayOnce writes msg to stderr the first time it is asked to.
func (s *supervisor) sayOnce(key, format string, args ...any) {
	s.mu.Lock()
	said := s.said[key]
	s.said[key] = true
	s.mu.Unlock()
	if !said {
		fmt.Fprintf(s.stderr, "watchq run: "+format+"\n", args...)
	}
}

// cleanup ends the supervisor: the loops stop, calls being served finish,
// then the listener closes (trapped calls of any process still carrying
// the filter fail with ENOSYS from now on), the key source closes and the
// FUSE connection with it (reads of queues still open elsewhere fail).
func (s *supervisor) cleanup() {
	close(s.done)
	if s.stop[1] >= 0 {
		unix.Write(s.stop[1], []byte{1})
	}
	s.wg.Wait()
	for _, fd := range []int{s.lfd, s.stop[0], s.stop[1]} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	s.mu.Lock()
	src := s.src
	s.mu.Unlock()
	if src != nil {
		src.Close()
	}
	s.mu.Lock()
	qs := make([]*kqueue, 0, len(s.queues))
	for _, q := range s.queues {
		qs = append(qs, q)
	}
	dc := s.daemon
	s.mu.Unlock()
	for _, q := range qs {
		q.mu.Lock()
		dw := q.devices
		q.devices = nil
		q.mu.Unlock()
		if dw != nil {
			dw.close()
		}
	}
	if dc != nil {
		dc.Close()
	}
	if s.fuse != nil {
		s.fuse.close()
	}
}

// stopped reports whether cleanup has begun (the stop pipe is readable).
func (s *supervisor) stopFd() int { return s.stop[0] }

// startHelper starts /proc/self/exe as the helper (MaybeHelper), which
// installs the filters on its one locked thread, sends their listeners and
// waits for goHelper before it executes PROG.
func (s *supervisor) startHelper() error {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sp[1])
	argv0 := s.cfg.HelperArgv0
	if argv0 == "" {
		argv0 = os.Args[0]
	}
	// PROG inherits what the supervisor inherited: every fd open without
	// FD_CLOEXEC, at its number (keyctl watch_session and shells pass
	// fds by number). The helper's socket goes above them all.
	files := inheritedFiles()
	hfd := len(files)
	files = append(files, uintptr(sp[1]))
	env := append(withoutEnv(s.cfg.Env, helperEnv), helperEnv+"="+strconv.Itoa(hfd))
	pid, err := syscall.ForkExec("/proc/self/exe", append([]string{argv0}, s.cfg.Args...), &syscall.ProcAttr{
		Env:   env,
		Files: files,
	})
	if err != nil {
		unix.Close(sp[0])
		return fmt.Errorf("start helper: %w", err)
	}
	s.pid = pid
	s.helper = sp[0]
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(sp[0], buf, oob, 0)
	fds := rightsOf(oob[:oobn])
	if err == nil && n == 0 {
		err = errors.New("helper exited")
	}
	if err == nil && string(buf[:min(n, 2)]) != "ok" {
		err = errors.New(strings.TrimPrefix(string(buf[:n]), "e:"))
	}
	if err == nil && len(fds) != 1 {
		err = fmt.Errorf("helper sent %d listener fds", len(fds))
	}
	if err != nil {
		closeFds(fds)
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		unix.Close(sp[0])
		if msg := strings.TrimPrefix(string(buf[:max(n, 0)]), "e:"); n > 0 && strings.HasPrefix(string(buf[:n]), "e:") {
			if st, rest, ok := strings.Cut(msg, ":"); ok && (st == "126" || st == "127") {
				n, _ := strconv.Atoi(st)
				return &ExecError{Msg: rest, Status: n}
			}
			return errors.New(msg)
		}
		return err
	}
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	s.lfd = fds[0]
	return nil
}

// inheritedFiles lists this process's fds open without FD_CLOEXEC (and
// 0, 1, 2 always) as ProcAttr.Files: index = fd, -1 = closed.
func inheritedFiles() []uintptr {
	files := []uintptr{0, 1, 2}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		for len(files) <= fd {
			files = append(files, ^uintptr(0))
		}
		files[fd] = uintptr(fd)
	}
	return files
}

// ExecError is PROG not found (Status 127) or not executable (126); the
// CLI exits with Status, as a shell does.
type ExecError struct {
	Msg    string
	Status int
}

func (e *ExecError) Error() string { return e.Msg }

// execError classifies a lookPath or execve failure.
func execError(err error) *ExecError {
	st := 126
	if errors.Is(err, errNotFound) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		st = 127
	}
	return &ExecError{Msg: err.Error(), Status: st}
}

func (s *supervisor) goHelper() error {
	defer unix.Close(s.helper)
	_, err := unix.Write(s.helper, []byte("g"))
	return err
}

// recvLoop receives the filter's notifications. keyctl calls go to the
// tracer thread, one at a time; the others are each served on a goroutine
// of their own (a FIONREAD may wait for a key poll pass).
func (s *supervisor) recvLoop() {
	defer s.wg.Done()
	for {
		if !s.waitListener(s.lfd) {
			return
		}
		n := new(seccompNotif)
		if err := notifRecv(s.lfd, n); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return
		}
		if _, c := classify(n.Data.Arch, n.Data.Nr); c == callKeyctl {
			select {
			case s.keyCalls <- n:
			case <-s.done:
				return
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveQueueCall(n)
		}()
	}
}

// waitListener polls a listener and the stop pipe; it reports whether a
// notification is pending.
func (s *supervisor) waitListener(fd int) bool {
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(s.stopFd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return false
		}
		if pfd[1].Revents != 0 {
			return false
		}
		if pfd[0].Revents&unix.POLLIN != 0 {
			return true
		}
		if pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return false // no task uses the filter any more
		}
	}
}

func (s *supervisor) serveQueueCall(n *seccompNotif) {
	a, c := classify(n.Data.Arch, n.Data.Nr)
	if a == abiX32 && !x32Enabled() {
		c = callUnknown // the kernel would not run it: ENOSYS, as it says
	}
	switch c {
	case callPipe2:
		s.pipe2(n, a)
	case callIoctl:
		s.ioctlCall(n)
	default:
		_ = notifSend(s.lfd, n.ID, 0, unix.ENOSYS, false)
	}
}

// pipe2 serves pipe2(fildes, flags|O_NOTIFICATION_PIPE): do_pipe2's flag
// check, a queue with its two FUSE files installed in the caller with
// SECCOMP_IOCTL_NOTIF_ADDFD, and fildes written.
func (s *supervisor) pipe2(n *seccompNotif, _ abi) {
	tid := int(n.Pid)
	addr := n.Data.Args[0]
	flags := uint32(n.Data.Args[1])
	if flags&^uint32(unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_DIRECT|kernel.ONotificationPipe) != 0 {
		_ = notifSend(s.lfd, n.ID, 0, unix.EINVAL, false)
		return
	}
	// fildes must be writable before anything is installed: the kernel
	// installs no fd when copy_to_user fails.
	var old [8]byte
	err := readMem(tid, addr, old[:])
	if err == nil {
		err = writeMem(tid, addr, old[:])
	}
	if err != nil {
		_ = notifSend(s.lfd, n.ID, 0, s.memErrno(tid, err), false)
		return
	}
	q := s.newQueue()
	nb := 0
	if flags&unix.O_NONBLOCK != 0 {
		nb = unix.O_NONBLOCK
	}
	rfd, err := s.fuse.openQueue(q.id, unix.O_RDONLY|nb)
	if err != nil {
		_ = notifSend(s.lfd, n.ID, 0, errnoOf(err), false)
		return
	}
	wfd, err := s.fuse.openQueue(q.id, unix.O_WRONLY|nb)
	if err != nil {
		unix.Close(rfd)
		_ = notifSend(s.lfd, n.ID, 0, errnoOf(err), false)
		return
	}
	cloexec := flags&unix.O_CLOEXEC != 0
	r, rerr := notifAddFd(s.lfd, n.ID, rfd, cloexec)
	w, werr := -1, rerr
	if rerr == nil {
		w, werr = notifAddFd(s.lfd, n.ID, wfd, cloexec)
	}
	// The supervisor's references go before the caller runs again: the
	// caller's close of the last one must be the last reference, so that
	// the file's release (FUSE_RELEASE, sent before close returns) comes
	// at once.
	unix.Close(rfd)
	unix.Close(wfd)
	if werr != nil {
		// A read end installed before the write end failed stays in the
		// caller's table (an fd cannot be taken back); the call fails as
		// the kernel's would, for example with EMFILE.
		_ = notifSend(s.lfd, n.ID, 0, errnoOf(werr), false)
		return
	}
	if err := writeMem(tid, addr, int32Pair(r, w)); err != nil {
		_ = notifSend(s.lfd, n.ID, 0, s.memErrno(tid, err), false)
		return
	}
	_ = notifSend(s.lfd, n.ID, 0, 0, false)
}

// x32Enabled reports whether the kernel runs x32 system calls (an x32
// getpid is ENOSYS where CONFIG_X86_X32_ABI is off or disabled at boot).
var x32Enabled = sync.OnceValue(func() bool {
	_, _, e := unix.RawSyscall(unix.SYS_GETPID|x32Bit, 0, 0, 0)
	return e != unix.ENOSYS
})

// ioctl request numbers as Go values.
const (
	ioctlSetSize   = kernel.IocWatchQueueSetSize
	ioctlSetFilter = kernel.IocWatchQueueSetFilter
)

// queueOfFd returns the queue fd refers to in task tid, or nil.
func (s *supervisor) queueOfFd(tid int, fd int32) *kqueue {
	fi, err := fdinfo(tid, fd)
	if err != nil || fi.mntID != s.fuse.mnt {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queues[fi.ino]
}

// ioctlCall serves a trapped ioctl. On a queue it is pipe_ioctl's; on a
// plain pipe the two watch-queue ioctls give ENODEV (watch_queue_set_size
// and _set_filter: no watch_queue); anything else goes on to the kernel
// unchanged, which answers as a kernel with the facility would (EBADF,
// ENOTTY, or the file's own ioctl).
func (s *supervisor) ioctlCall(n *seccompNotif) {
	tid := int(n.Pid)
	fd := int32(n.Data.Args[0])
	cmd := uint32(n.Data.Args[1])
	arg := n.Data.Args[2]
	q := s.queueOfFd(tid, fd)
	if q == nil {
		if (cmd == ioctlSetSize || cmd == ioctlSetFilter) && isPipe(tid, fd) && notifIDValid(s.lfd, n.ID) {
			_ = notifSend(s.lfd, n.ID, 0, unix.ENODEV, false)
			return
		}
		_ = notifSend(s.lfd, n.ID, 0, 0, true)
		return
	}
	if !notifIDValid(s.lfd, n.ID) {
		return
	}
	var errno unix.Errno
	switch cmd {
	case ioctlSetSize:
		errno = q.setSize(uint32(arg))
	case ioctlSetFilter:
		errno = s.setFilterFrom(q, tid, arg)
	case fionread:
		b := le.AppendUint32(nil, uint32(s.fionread(context.Background(), q)))
		if err := writeMem(tid, arg, b); err != nil {
			errno = s.memErrno(tid, err)
		}
	case IocWatchDevices:
		errno = s.watchDevices(q, tid, arg)
	default:
		errno = unix.ENOTTY
	}
	_ = notifSend(s.lfd, n.ID, 0, errno, false)
}

// wakeLoop hands queues the engine reports readable to their blocked
// readers and pollers.
func (s *supervisor) wakeLoop(ctx context.Context) {
	for {
		qs, err := s.rs.Wait(ctx)
		if err != nil {
			return
		}
		for _, eq := range qs {
			s.mu.Lock()
			q := s.byEQ[eq]
			s.mu.Unlock()
			if q == nil {
				continue
			}
			q.mu.Lock()
			if !q.closed {
				q.drainLocked()
				if q.count > 0 || q.noteLoss {
					q.wakeLocked()
				}
			}
			q.mu.Unlock()
		}
	}
}

// handOver gives every queue's blocked readers and pollers what has been
// posted, now: when it returns, a reader blocked on a record posted
// before the call has been answered (and woken).
func (s *supervisor) handOver() {
	s.mu.Lock()
	qs := make([]*kqueue, 0, len(s.queues))
	for _, q := range s.queues {
		qs = append(qs, q)
	}
	s.mu.Unlock()
	for _, q := range qs {
		q.mu.Lock()
		if !q.closed {
			q.drainLocked()
			if q.count > 0 || q.noteLoss {
				q.wakeLocked()
			}
		}
		q.mu.Unlock()
	}
}

// keySource returns the key source if one is open.
func (s *supervisor) keySource() *keys.Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.src
}

// openKeySource opens the key source on the first key watch, with the
// key package's own choice of backend, and says which once.
func (s *supervisor) openKeySource() (*keys.Source, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.src != nil || s.srcErr != nil {
		return s.src, s.srcErr
	}
	src, err := keys.Open(context.Background(), keys.Config{Engine: s.eng})
	if err != nil {
		s.srcErr = err
		fmt.Fprintf(s.stderr, "watchq run: keys cannot be watched: %v\n", err)
		return nil, err
	}
	s.src = src
	switch src.Backend() {
	case keys.Poll:
		fmt.Fprintf(s.stderr, "watchq run: keys are watched by polling (%s backend; see docs/keys.md for what it cannot see)\n", src.Backend())
	default:
		fmt.Fprintf(s.stderr, "watchq run: keys are watched through the %s backend\n", src.Backend())
	}
	return src, nil
}

// listenSync serves SyncSocket.
func (s *supervisor) listenSync(ctx context.Context, path string) error {
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		l.Close() // and unlink the socket
	}()
	go func() {
		defer l.Close()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if strings.TrimSpace(sc.Text()) != "sync" {
						fmt.Fprintln(c, "error: unknown command")
						continue
					}
					if src := s.keySource(); src != nil {
						if err := src.Sync(ctx); err != nil {
							fmt.Fprintln(c, "error:", err)
							continue
						}
					}
					s.handOver()
					fmt.Fprintln(c, "ok")
				}
			}()
		}
	}()
	return nil
}

func withoutEnv(env []string, name string) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

// lookPath finds file in env's PATH, as execvp would.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := unix.Access(file, unix.X_OK); err != nil {
			return "", fmt.Errorf("exec %s: %w", file, err)
		}
		return file, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	var first error
	for dir := range strings.SplitSeq(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + file
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || st.Mode&unix.S_IFMT == unix.S_IFDIR {
			continue
		}
		if err := unix.Access(p, unix.X_OK); err != nil {
			if first == nil {
				first = fmt.Errorf("exec %s: %w", p, err)
			}
			continue
		}
		return p, nil
	}
	if first != nil {
		return "", first
	}
	return "", fmt.Errorf("exec %s: %w", file, errNotFound)
}

var errNotFound = errors.New("command not found")
