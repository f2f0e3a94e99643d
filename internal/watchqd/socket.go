//go:build linux

package watchqd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The socket watchqd creates itself (without systemd) is a trust boundary
// of its own: its directory, its mode and its name must be out of any
// unprivileged user's reach.
//
//   - Directory: the socket's directory must be owned by root or watchqd's
//     uid and writable by nobody else, and so must every directory above it
//     unless its sticky bit keeps others from renaming what they do not own
//     (as /tmp's). Otherwise another user could swap names under watchqd
//     between any check and any use. A missing directory is created 0755.
//   - Mode: the socket has its final mode from the moment its name exists:
//     bind(2) gives the new inode the socket's mode minus the umask
//     (net/unix/af_unix.c, unix_bind_bsd), so watchqd binds on a thread of
//     its own whose umask is exactly the complement of the mode. That
//     thread first leaves the process's shared fs attributes
//     (unshare(CLONE_FS)), so no other goroutine ever runs under that
//     umask, and the runtime ends the thread when the binding goroutine
//     returns (it never unlocks it; if it was the main thread, the runtime
//     parks it for good instead, and /proc/PID/status, which shows the
//     main thread's umask, then shows the socket's). Changing the process
//     umask around bind would widen every file another goroutine creates
//     meanwhile; fchmod(2) on the socket after bind changes only the
//     socket's own inode in sockfs, not the bound name's (checked on
//     Linux 6.18); chmod(2) by path after bind follows whatever the name is
//     by then; binding in a private directory and renaming into place
//     would work too, but leaves getsockname(2) naming the old path. If
//     unshare is refused (a seccomp filter), watchqd fchmods the socket
//     before bind instead, which can only narrow the mode under the
//     process umask, and refuses to start when it did.
//   - Name: watchqd holds an exclusive flock on SOCKET.lock, which holds its
//     pid, for as long as it runs. A second watchqd on the same path fails
//     to take it and stops without touching the socket. Only the lock's
//     holder removes a socket left at the path, and only one that nothing
//     answers on; on the way out it unlinks the socket only if the name
//     still is the inode it bound, then the lock file, then lets go of the
//     lock.

// lockSuffix names the lock file next to the socket.
const lockSuffix = ".lock"

// socket is a listening socket watchqd created, with its lock.
type socket struct {
	l        *net.UnixListener
	path     string
	dev, ino uint64 // the inode bind(2) created at path
	lock     *os.File
	log      *slog.Logger
}

// createSocket takes the lock next to path and binds a listening
// SOCK_SEQPACKET socket there with permission bits mode.
func createSocket(path string, mode uint32, log *slog.Logger) (_ *socket, err error) {
	if mode&^0o777 != 0 {
		return nil, fmt.Errorf("watchqd: socket mode %#o: want permission bits", mode)
	}
	path, err = filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("watchqd: %w", err)
	}
	dir := filepath.Dir(path)
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	lock, err := takeLock(path + lockSuffix)
	if err != nil {
		return nil, fmt.Errorf("watchqd: %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			removeIfSame(path+lockSuffix, lock)
			lock.Close()
		}
	}()
	if err := removeStale(path, log); err != nil {
		return nil, err
	}
	fd, err := bindSocket(path, mode)
	if err != nil {
		return nil, err
	}
	s := &socket{path: path, lock: lock, log: log}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(fd)
		return nil, fmt.Errorf("watchqd: %s after bind: mode %#o, %v; want a socket", path, st.Mode, err)
	}
	s.dev, s.ino = st.Dev, st.Ino
	defer func() {
		if err != nil {
			s.removeSocket()
		}
	}()
	if st.Mode&0o777 != mode {
		unix.Close(fd)
		return nil, fmt.Errorf("watchqd: %s after bind: mode %#o, want %#o", path, st.Mode&0o777, mode)
	}
	// listen(2) caps the backlog at net.core.somaxconn.
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watchqd: listen %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	nl, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("watchqd: listen %s: %w", path, err)
	}
	ul, ok := nl.(*net.UnixListener)
	if !ok || ul.Addr().Network() != "unixpacket" {
		nl.Close()
		return nil, fmt.Errorf("watchqd: listen %s: got a %T on %s", path, nl, nl.Addr().Network())
	}
	// Close must not unlink by path: Close below unlinks only our inode.
	ul.SetUnlinkOnClose(false)
	s.l = ul
	return s, nil
}

// Close closes the listener, unlinks the socket if the name still is the
// inode this process bound, removes the lock file and releases the lock.
func (s *socket) Close() error {
	s.l.Close()
	err := s.removeSocket()
	removeIfSame(s.path+lockSuffix, s.lock)
	s.lock.Close()
	return err
}

func (s *socket) removeSocket() error {
	var st unix.Stat_t
	if err := unix.Lstat(s.path, &st); err != nil {
		s.log.Warn("socket gone before shutdown", "socket", s.path, "err", err)
		return nil
	}
	if st.Dev != s.dev || st.Ino != s.ino {
		s.log.Warn("socket replaced by another file; leaving it", "socket", s.path)
		return nil
	}
	if err := unix.Unlink(s.path); err != nil {
		return fmt.Errorf("watchqd: remove %s: %w", s.path, err)
	}
	return nil
}

// ensureDir creates dir, and the directories above it, with mode 0755
// when missing. Each is created only in a directory checkDir trusts.
func ensureDir(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("watchqd: socket directory %s is not a directory (%v)", dir, fi.Mode().Type())
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("watchqd: socket directory: %w", err)
	}
	parent := filepath.Dir(dir)
	if parent == dir {
		return fmt.Errorf("watchqd: socket directory: %w", err)
	}
	if err := ensureDir(parent); err != nil {
		return err
	}
	if err := checkDir(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made meanwhile by someone checkDir trusts
		}
		return fmt.Errorf("watchqd: socket directory: %w", err)
	}
	// The umask may have narrowed 0755; set it through a descriptor of
	// the directory just made.
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("watchqd: socket directory: %w", err)
	}
	defer d.Close()
	if err := d.Chmod(0o755); err != nil {
		return fmt.Errorf("watchqd: socket directory: %w", err)
	}
	return nil
}

// checkDir refuses a socket directory that a user other than root or
// watchqd's own could change: it, and every directory above it, must be
// owned by root or watchqd's euid; it must be writable by its owner only,
// and those above it too unless they are sticky. Symbolic links are
// followed first, so the directories checked are the ones used.
func checkDir(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("watchqd: socket directory: %w", err)
	}
	euid := uint32(os.Geteuid())
	for p := real; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("watchqd: socket directory: %w", err)
		}
		what := fmt.Sprintf("socket directory %s", dir)
		if p != real {
			what = fmt.Sprintf("%s, above socket directory %s,", p, dir)
		} else if real != dir {
			what = fmt.Sprintf("socket directory %s (%s)", dir, real)
		}
		perm := st.Mode & 0o7777
		switch {
		case st.Mode&unix.S_IFMT != unix.S_IFDIR:
			return fmt.Errorf("watchqd: %s is not a directory (mode %#o)", what, st.Mode)
		case st.Uid != 0 && st.Uid != euid:
			return fmt.Errorf("watchqd: %s is owned by uid %d, who could replace the socket: refusing it (want a directory owned by root or uid %d)", what, st.Uid, euid)
		case perm&0o022 != 0 && (p == real || perm&unix.S_ISVTX == 0):
			return fmt.Errorf("watchqd: %s is writable by group or others (mode %#o), who could replace the socket: refusing it (chmod go-w, or choose another --socket)", what, perm)
		}
		if p == "/" {
			return nil
		}
	}
}

// takeLock opens path (creating it) and takes an exclusive flock on it
// without waiting, then writes this process's pid into it. When another
// process holds the lock it returns an error naming that process's pid.
func takeLock(path string) (*os.File, error) {
	// A watchqd on its way out unlinks the lock file while still holding
	// it. If that happens between our open and our flock, we hold a lock
	// on a file no one else will ever open: retry until the file locked is
	// the one at path.
	for range 100 {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lock file: %w", &os.PathError{Op: "open", Path: path, Err: err})
		}
		f := os.NewFile(uintptr(fd), path)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			f.Close()
			return nil, fmt.Errorf("lock file %s is not a regular file (mode %#o, %v)", path, st.Mode, err)
		}
		for {
			err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
			if err != unix.EINTR {
				break
			}
		}
		if err == unix.EWOULDBLOCK {
			b := make([]byte, 32)
			n, _ := f.ReadAt(b, 0)
			f.Close()
			pid := "pid unknown"
			if p, err := strconv.Atoi(string(bytes.TrimSpace(b[:n]))); err == nil && p > 0 {
				pid = "pid " + strconv.Itoa(p)
			}
			return nil, fmt.Errorf("another watchqd (%s) holds %s and serves this socket: refusing to start", pid, path)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock file: %w", &os.PathError{Op: "flock", Path: path, Err: err})
		}
		var cur unix.Stat_t
		if err := unix.Lstat(path, &cur); err != nil || cur.Dev != st.Dev || cur.Ino != st.Ino {
			f.Close()
			continue
		}
		// Readable by all, so that whoever finds the socket in use can
		// tell by whom.
		if err := f.Chmod(0o644); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock file: %w", err)
		}
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock file: %w", err)
		}
		if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock file: %w", err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("lock file %s keeps being replaced", path)
}

// removeIfSame unlinks path if it still names f's inode.
func removeIfSame(path string, f *os.File) {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) == nil && unix.Lstat(path, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
		unix.Unlink(path)
	}
}

// removeStale removes a socket left at path by a watchqd that is gone.
// The caller holds the lock, so no watchqd serves it; a socket that
// answers anyway (a program that takes no lock) is left alone, and so is
// anything that is not a socket.
func removeStale(path string, log *slog.Logger) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	switch {
	case err == unix.ENOENT:
		return nil
	case err != nil:
		return fmt.Errorf("watchqd: %w", &os.PathError{Op: "lstat", Path: path, Err: err})
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return fmt.Errorf("watchqd: %s exists and is not a socket (mode %#o): refusing to replace it", path, st.Mode)
	}
	live, err := answers(path)
	if err != nil {
		return fmt.Errorf("watchqd: probing the socket left at %s: %w", path, err)
	}
	if live {
		return fmt.Errorf("watchqd: %s is a live socket served by a process that holds no %s: refusing to replace it", path, path+lockSuffix)
	}
	if err := unix.Unlink(path); err != nil && err != unix.ENOENT {
		return fmt.Errorf("watchqd: remove stale socket: %w", &os.PathError{Op: "unlink", Path: path, Err: err})
	}
	log.Info("removed a stale socket", "socket", path)
	return nil
}

// answers reports whether a process listens on the Unix socket at path,
// of whichever type it is: connect(2) to a socket whose process is gone
// is ECONNREFUSED, to one of another type EPROTOTYPE.
func answers(path string) (bool, error) {
	for _, typ := range []int{unix.SOCK_SEQPACKET, unix.SOCK_STREAM, unix.SOCK_DGRAM} {
		fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return false, err
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		unix.Close(fd)
		switch err {
		case nil, unix.EAGAIN, unix.EINPROGRESS:
			return true, nil
		case unix.ECONNREFUSED, unix.ENOENT:
			return false, nil
		case unix.EPROTOTYPE:
			continue
		default:
			return false, err
		}
	}
	return false, nil
}

// unshareFS gives the calling thread fs attributes of its own; a variable
// so that tests can take the fallback.
var unshareFS = func() error { return unix.Unshare(unix.CLONE_FS) }

// bindSocket returns a SOCK_SEQPACKET socket bound at path whose inode
// has had mode from the start (see the comment at the top of this file).
func bindSocket(path string, mode uint32) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread stays locked: after unshare its umask is its own,
		// and the runtime ends it (or, the main thread, parks it) when
		// this goroutine returns instead of running other goroutines on
		// it.
		runtime.LockOSThread()
		fd, err := bindOnThread(path, mode)
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func bindOnThread(path string, mode uint32) (int, error) {
	uerr := unshareFS()
	if uerr == nil {
		unix.Umask(int(^mode & 0o777))
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("watchqd: socket: %w", err)
	}
	// The bound inode's mode is the socket's (sockfs) mode minus the
	// umask: without a private umask this keeps it within mode.
	if err := unix.Fchmod(fd, mode); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("watchqd: fchmod socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("watchqd: bind: %w", &os.PathError{Op: "bind", Path: path, Err: err})
	}
	if uerr != nil {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil || st.Mode&0o777 != mode {
			unix.Unlink(path)
			unix.Close(fd)
			return -1, fmt.Errorf("watchqd: %s: cannot bind with mode %#o: unshare(CLONE_FS) failed (%v) and the process umask narrowed the mode to %#o; start watchqd with umask %#o, or let systemd create the socket", path, mode, uerr, st.Mode&0o777, ^mode&0o777)
		}
	}
	return fd, nil
}
