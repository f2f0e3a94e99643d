package daemon

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"unsafe"

	"github.com/watchq/watchq"
	"golang.org/x/sys/unix"
)

// peerCred returns the credentials of the process at the other end of c,
// as the kernel recorded them at connect(2): SO_PEERCRED (uid, gid, pid),
// SO_PEERGROUPS (supplementary groups; looked up in the group database on
// kernels without it) and SO_PEERSEC (the LSM label, "" when no LSM
// provides one).
func peerCred(c *net.UnixConn) (*watchq.Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *watchq.Cred
	var cerr error
	err = rc.Control(func(fd uintptr) {
		uc, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			cerr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		cred = &watchq.Cred{UID: uc.Uid, GID: uc.Gid, PID: uc.Pid}
		groups, err := peerGroups(int(fd))
		if err != nil {
			groups = lookupGroups(uc.Uid)
		}
		cred.Groups = groups
		cred.Label = peerLabel(int(fd))
	})
	if err == nil {
		err = cerr
	}
	return cred, err
}

// getsockopt is getsockopt(2) into b, returning the length the kernel
// wrote or wants.
func getsockopt(fd, level, opt int, b []byte) (int, error) {
	n := uint32(len(b))
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13), growing the buffer on
// ERANGE.
func peerGroups(fd int) ([]uint32, error) {
	b := make([]byte, 64*4)
	for range 4 {
		n, err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS, b)
		if err == unix.ERANGE && n > len(b) {
			b = make([]byte, n)
			continue
		}
		if err != nil {
			return nil, err
		}
		gs := make([]uint32, n/4)
		for i := range gs {
			gs[i] = binary.NativeEndian.Uint32(b[4*i:])
		}
		return gs, nil
	}
	return nil, unix.ERANGE
}

// peerLabel reads SO_PEERSEC; "" when no LSM labels sockets
// (ENOPROTOOPT) or the label is "unconfined".
func peerLabel(fd int) string {
	b := make([]byte, 256)
	n, err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_PEERSEC, b)
	if err == unix.ERANGE && n > len(b) && n < 1<<16 {
		b = make([]byte, n)
		n, err = getsockopt(fd, unix.SOL_SOCKET, unix.SO_PEERSEC, b)
	}
	if err != nil || n <= 0 || n > len(b) {
		return ""
	}
	l := string(bytes.TrimRight(b[:n], "\x00\n"))
	if l == "unconfined" {
		return ""
	}
	return l
}

// lookupGroups returns uid's supplementary groups from the group
// database, or nil.
func lookupGroups(uid uint32) []uint32 {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var gs []uint32
	for _, s := range ids {
		if n, err := strconv.ParseUint(s, 10, 32); err == nil {
			gs = append(gs, uint32(n))
		}
	}
	return gs
}

// clientNofile returns the RLIMIT_NOFILE soft limit of process pid, from
// /proc/PID/limits, or 0 when it cannot be read (the process is gone, or
// /proc hides it). The pid is SO_PEERCRED's, from connect(2): if that
// process is gone and its pid reused, this reads another process's limit,
// which can only lower the client's limits (they are the smaller of this
// and watchqd.conf's), never raise them.
func clientNofile(pid int32) int {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0
	}
	return parseNofile(b)
}

// parseNofile finds the soft limit on the "Max open files" line of a
// /proc/PID/limits; 0 if there is none or it is unlimited.
func parseNofile(b []byte) int {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("Max open files"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		n, err := strconv.ParseUint(string(f[0]), 10, 31)
		if err != nil {
			return 0
		}
		return int(n)
	}
	return 0
}
