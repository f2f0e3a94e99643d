//go:build linux && amd64

package run

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// A small FUSE server of its own, speaking the protocol of
// include/uapi/linux/fuse.h directly. go-fuse answers FUSE_POLL with ENOSYS,
// after which the kernel reports every FUSE file always ready; a
// notification pipe's poll() must say POLLIN only when a record is queued
// and POLLHUP once the write ends are gone, so the queue files need
// FUSE_POLL and FUSE_NOTIFY_POLL, which this server implements.
//
// The file system has a root directory and one regular file per queue,
// named "q<id>". It is mounted on a temporary directory, its root opened,
// and then lazily unmounted (MNT_DETACH): nothing can find it by path, it
// never outlives the supervisor as a stale mount, and the supervisor opens
// queue files relative to the root it holds.

// FUSE protocol constants (include/uapi/linux/fuse.h).
const (
	fuseKernelVersion = 7
	fuseMinorVersion  = 31 // what this server speaks; the kernel adapts
	fuseRootID        = 1
	fuseMinReadBuffer = 8192

	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opFlush       = 25
	opInit        = 26
	opOpendir     = 27
	opReaddir     = 28
	opReleasedir  = 29
	opAccess      = 34
	opInterrupt   = 36
	opDestroy     = 38
	opIoctl       = 39
	opPoll        = 40
	opBatchForget = 42

	fopenDirectIO    = 1 << 0
	fopenNonseekable = 1 << 2
	fopenStream      = 1 << 4

	pollScheduleNotify = 1 << 0
	notifyPoll         = 1 // FUSE_NOTIFY_POLL

	inHeaderSize  = 40
	outHeaderSize = 16
	attrSize      = 88
	maxWrite      = 4096
)

// fuseReq is one request read from /dev/fuse.
type fuseReq struct {
	opcode uint32
	unique uint64
	nodeid uint64
	uid    uint32
	gid    uint32
	pid    uint32 // the calling thread, in the server's pid namespace
	body   []byte // the op's arguments (a copy)
}

// fuseFS is what the server asks of the queue table. Calls come from the
// server's one reading goroutine, in request order; read may answer later
// through srv.reply.
type fuseFS interface {
	lookup(name string) (nodeid uint64, ok bool)
	open(nodeid uint64, flags uint32) (fh uint64, errno unix.Errno)
	read(r *fuseReq, fh uint64, size uint32, flags uint32)
	interrupt(unique uint64)
	release(fh uint64)
	poll(fh, kh uint64, flags, events uint32) (revents uint32, errno unix.Errno)
	ioctl(r *fuseReq, fh uint64, cmd uint32, arg uint64) (result int32, errno unix.Errno)
}

type fuseServer struct {
	dev *os.File // /dev/fuse, non-blocking, through the runtime poller
	fs  fuseFS
	uid uint32
	gid uint32
	mnt uint64 // the mount's id (statx STATX_MNT_ID), as /proc/PID/fdinfo shows it

	rmu  sync.RWMutex // guards root against close
	root int          // O_PATH|O_DIRECTORY fd of the detached mount's root; -1 once closed

	wmu sync.Mutex // one reply at a time (each is one write)
}

// mountFUSE mounts a new instance, starts serving it and returns the
// server once its root is open and the mount detached.
func mountFUSE(fs fuseFS) (*fuseServer, error) {
	dir, err := os.MkdirTemp("", "watchq-run-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	s := &fuseServer{fs: fs, uid: uint32(os.Getuid()), gid: uint32(os.Getgid()), root: -1}
	fd, how, err := mountAt(dir, s.uid, s.gid)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	s.dev = os.NewFile(uintptr(fd), "/dev/fuse")
	go s.serve()
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		s.root = root
		var st unix.Statx_t
		if err = unix.Statx(root, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &st); err == nil && st.Mask&unix.STATX_MNT_ID == 0 {
			err = errors.New("statx: no STATX_MNT_ID (kernel older than 5.8)")
		}
		s.mnt = st.Mnt_id
	}
	if derr := unmountLazy(dir, how); err == nil {
		err = derr
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// mountAt mounts a FUSE file system on dir: mount(2) directly where the
// process may (root), else through fusermount3, which hands the /dev/fuse
// fd back over a socket. It returns the fd and how it was mounted.
func mountAt(dir string, uid, gid uint32) (fd int, how string, err error) {
	fd, merr := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if merr == nil {
		opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d", fd, uid, gid)
		merr = unix.Mount("watchq", dir, "fuse.watchq", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts)
		if merr == nil {
			return fd, "mount", nil
		}
		unix.Close(fd)
		merr = fmt.Errorf("mount(2): %w", merr)
	} else {
		merr = fmt.Errorf("open /dev/fuse: %w", merr)
	}
	if !errors.Is(merr, unix.EPERM) && !errors.Is(merr, unix.EACCES) {
		return -1, "", fmt.Errorf("mount FUSE on %s: %w", dir, merr)
	}
	fd, err = fusermount(dir)
	if err != nil {
		return -1, "", fmt.Errorf("mount FUSE: %v; fusermount3: %w", merr, err)
	}
	return fd, "fusermount3", nil
}

// fusermount runs fusermount3 the way libfuse does: a socketpair's end in
// $_FUSE_COMMFD, the /dev/fuse fd coming back as SCM_RIGHTS.
func fusermount(dir string) (int, error) {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		return -1, err
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	theirs := os.NewFile(uintptr(sp[1]), "fusermount-comm")
	defer theirs.Close()
	defer unix.Close(sp[0])
	cmd := exec.Command(bin, "-o", "nosuid,nodev,noexec,fsname=watchq,subtype=watchq", "--", dir)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Env = append(os.Environ(), "_FUSE_COMMFD=3")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	theirs.Close()
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, rerr := unix.Recvmsg(sp[0], buf, oob, 0)
	werr := cmd.Wait()
	if rerr != nil {
		return -1, rerr
	}
	if werr != nil {
		return -1, werr
	}
	fds := rightsOf(oob[:oobn])
	if len(fds) != 1 {
		closeFds(fds)
		return -1, errors.New("fusermount3 sent no fd")
	}
	unix.CloseOnExec(fds[0])
	return fds[0], nil
}

// unmountLazy detaches the mount from the tree; the root fd keeps it
// alive for the supervisor.
func unmountLazy(dir, how string) error {
	if how == "mount" {
		return unix.Unmount(dir, unix.MNT_DETACH)
	}
	out, err := exec.Command("fusermount3", "-u", "-z", "--", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func rightsOf(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// openQueue opens queue file id with flags, relative to the held root.
func (s *fuseServer) openQueue(id uint64, flags int) (int, error) {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	if s.root < 0 {
		return -1, unix.ENXIO
	}
	return unix.Openat(s.root, "q"+strconv.FormatUint(id, 10), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
}

func (s *fuseServer) close() {
	s.rmu.Lock()
	if s.root >= 0 {
		unix.Close(s.root)
		s.root = -1
	}
	s.rmu.Unlock()
	if s.dev != nil {
		s.dev.Close()
	}
}

// serve reads requests until the connection ends.
func (s *fuseServer) serve() {
	buf := make([]byte, fuseMinReadBuffer+maxWrite+4096)
	for {
		n, err := s.dev.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.ENOENT) {
				continue // ENOENT: the request was interrupted before we got it
			}
			return // ENODEV: unmounted and released; or closed
		}
		if n < inHeaderSize {
			continue
		}
		le := binary.LittleEndian
		r := &fuseReq{
			opcode: le.Uint32(buf[4:]),
			unique: le.Uint64(buf[8:]),
			nodeid: le.Uint64(buf[16:]),
			uid:    le.Uint32(buf[24:]),
			gid:    le.Uint32(buf[28:]),
			pid:    le.Uint32(buf[32:]),
		}
		l := min(int(le.Uint32(buf[0:])), n)
		r.body = append([]byte(nil), buf[inHeaderSize:l]...)
		if s.handle(r) {
			return
		}
	}
}

// reply sends a reply: errno 0 and payload, or an error.
func (s *fuseServer) reply(r *fuseReq, errno unix.Errno, payload []byte) {
	if errno != 0 {
		payload = nil
	}
	b := make([]byte, outHeaderSize+len(payload))
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(len(b)))
	le.PutUint32(b[4:], uint32(-int32(errno)))
	le.PutUint64(b[8:], r.unique)
	copy(b[outHeaderSize:], payload)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// ENOENT: the request was interrupted and has gone; nothing to do.
	_, _ = s.dev.Write(b)
}

// notifyPoll wakes whoever polls the file with kernel handle kh.
func (s *fuseServer) notifyPoll(kh uint64) {
	b := make([]byte, outHeaderSize+8)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(len(b)))
	le.PutUint32(b[4:], notifyPoll) // error carries the notify code; unique is 0
	le.PutUint64(b[outHeaderSize:], kh)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, _ = s.dev.Write(b)
}

// attr encodes a struct fuse_attr.
func (s *fuseServer) attr(b []byte, ino uint64, mode uint32) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], ino)
	le.PutUint32(b[60:], mode)
	le.PutUint32(b[64:], 1) // nlink
	le.PutUint32(b[68:], s.uid)
	le.PutUint32(b[72:], s.gid)
	le.PutUint32(b[80:], 4096) // blksize
}

func (s *fuseServer) modeOf(nodeid uint64) uint32 {
	if nodeid == fuseRootID {
		return unix.S_IFDIR | 0o500
	}
	return unix.S_IFREG | 0o600
}

// handle serves one request; it reports whether the connection is done.
func (s *fuseServer) handle(r *fuseReq) (done bool) {
	le := binary.LittleEndian
	b := r.body
	short := func(n int) bool {
		if len(b) < n {
			s.reply(r, unix.EINVAL, nil)
			return true
		}
		return false
	}
	switch r.opcode {
	case opInit:
		if short(16) {
			return false
		}
		out := make([]byte, 64)
		le.PutUint32(out[0:], fuseKernelVersion)
		le.PutUint32(out[4:], fuseMinorVersion)
		le.PutUint32(out[8:], le.Uint32(b[8:])) // max_readahead as offered
		le.PutUint16(out[16:], 1024)            // max_background: releases are background requests; keep them in order
		le.PutUint16(out[18:], 12)              // congestion_threshold
		le.PutUint32(out[20:], maxWrite)
		le.PutUint32(out[24:], 1) // time_gran
		s.reply(r, 0, out)
	case opLookup:
		name := string(b)
		if i := strings.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		id, ok := uint64(0), false
		if r.nodeid == fuseRootID {
			id, ok = s.fs.lookup(name)
		}
		if !ok {
			s.reply(r, unix.ENOENT, nil)
			return false
		}
		out := make([]byte, 40+attrSize)
		le.PutUint64(out[0:], id)
		le.PutUint64(out[8:], 1) // generation; ids are never reused
		s.attr(out[40:], id, s.modeOf(id))
		s.reply(r, 0, out)
	case opForget, opBatchForget:
		// No reply. Queue nodes live in the queue table, not by lookup count.
	case opGetattr:
		out := make([]byte, 16+attrSize)
		s.attr(out[16:], r.nodeid, s.modeOf(r.nodeid))
		s.reply(r, 0, out)
	case opSetattr:
		s.reply(r, unix.EPERM, nil)
	case opOpen:
		if short(8) {
			return false
		}
		fh, errno := s.fs.open(r.nodeid, le.Uint32(b[0:]))
		out := make([]byte, 16)
		le.PutUint64(out[0:], fh)
		le.PutUint32(out[8:], fopenDirectIO|fopenNonseekable|fopenStream)
		s.reply(r, errno, out)
	case opRead:
		if short(40) {
			return false
		}
		s.fs.read(r, le.Uint64(b[0:]), le.Uint32(b[16:]), le.Uint32(b[32:]))
	case opWrite:
		// pipe_write: "if (pipe_has_watch_queue(pipe)) return -EXDEV".
		s.reply(r, unix.EXDEV, nil)
	case opStatfs:
		out := make([]byte, 80)
		le.PutUint32(out[40:], 4096) // bsize
		le.PutUint32(out[44:], 255)  // namelen
		le.PutUint32(out[48:], 4096) // frsize
		s.reply(r, 0, out)
	case opRelease:
		if short(8) {
			return false
		}
		s.fs.release(le.Uint64(b[0:]))
		s.reply(r, 0, nil)
	case opFlush, opAccess:
		// ENOSYS: the kernel stops asking and treats them as done.
		s.reply(r, unix.ENOSYS, nil)
	case opOpendir:
		s.reply(r, 0, make([]byte, 16))
	case opReaddir:
		s.reply(r, 0, nil)
	case opReleasedir:
		s.reply(r, 0, nil)
	case opInterrupt:
		if len(b) >= 8 {
			s.fs.interrupt(le.Uint64(b[0:]))
		}
	case opPoll:
		if short(24) {
			return false
		}
		rev, errno := s.fs.poll(le.Uint64(b[0:]), le.Uint64(b[8:]), le.Uint32(b[16:]), le.Uint32(b[20:]))
		out := make([]byte, 8)
		le.PutUint32(out[0:], rev)
		s.reply(r, errno, out)
	case opIoctl:
		if short(32) {
			return false
		}
		res, errno := s.fs.ioctl(r, le.Uint64(b[0:]), le.Uint32(b[12:]), le.Uint64(b[16:]))
		out := make([]byte, 16)
		le.PutUint32(out[0:], uint32(res))
		s.reply(r, errno, out)
	case opDestroy:
		s.reply(r, 0, nil)
		return true
	default:
		s.reply(r, unix.ENOSYS, nil)
	}
	return false
}
