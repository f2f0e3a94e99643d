//go:build linux && amd64

package run

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/watchq/watchq"
	"golang.org/x/sys/unix"
)

// What the supervisor learns about a trapped task from /proc and
// process_vm_readv/writev. Every call names the task by its thread id in
// the supervisor's pid namespace (seccomp_notif.pid); callers check
// SECCOMP_IOCTL_NOTIF_ID_VALID afterwards, so that a recycled id cannot
// make them act on another task.

// readMem copies len(b) bytes at addr in task tid.
func readMem(tid int, addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	n, err := unix.ProcessVMReadv(tid, local, remote, 0)
	if err != nil {
		return err
	}
	if n != len(b) {
		return unix.EFAULT
	}
	return nil
}

// memErrno is the errno a trapped call returns when PROG's memory could
// not be read or written: EFAULT, as the kernel's copy_from_user and
// copy_to_user fail, unless the supervisor was refused access to the task
// (Yama's ptrace_scope 3, a non-dumpable task): then EPERM, said once.
func (s *supervisor) memErrno(tid int, err error) unix.Errno {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		s.sayOnce("mem", "cannot access the memory of pid %d (process_vm_readv/writev: %v): is ptrace forbidden (Yama ptrace_scope 3) or the task non-dumpable? Its call fails with EPERM", tid, err)
		return unix.EPERM
	}
	return unix.EFAULT
}

// writeMem copies b to addr in task tid.
func writeMem(tid int, addr uint64, b []byte) error {
	local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	n, err := unix.ProcessVMWritev(tid, local, remote, 0)
	if err != nil {
		return err
	}
	if n != len(b) {
		return unix.EFAULT
	}
	return nil
}

// fdInfo is what /proc/TID/fdinfo/FD says about one descriptor.
type fdInfo struct {
	mntID uint64
	ino   uint64
	flags int
}

// fdinfo reads /proc/TID/fdinfo/FD; it fails with ENOENT for a closed fd.
func fdinfo(tid int, fd int32) (fdInfo, error) {
	if fd < 0 {
		return fdInfo{}, unix.EBADF
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/fdinfo/" + strconv.Itoa(int(fd)))
	if err != nil {
		return fdInfo{}, err
	}
	var fi fdInfo
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "mnt_id":
			fi.mntID, _ = strconv.ParseUint(v, 10, 64)
		case "ino":
			fi.ino, _ = strconv.ParseUint(v, 10, 64)
		case "flags":
			f, _ := strconv.ParseUint(v, 8, 32)
			fi.flags = int(f)
		}
	}
	return fi, nil
}

// isPipe reports whether fd in task tid is a pipe (its /proc link reads
// "pipe:[ino]").
func isPipe(tid int, fd int32) bool {
	l, err := os.Readlink("/proc/" + strconv.Itoa(tid) + "/fd/" + strconv.Itoa(int(fd)))
	return err == nil && strings.HasPrefix(l, "pipe:")
}

// taskCred reads the effective credentials of task tid (/proc/TID/status)
// for the engine's policy, and its LSM label.
func taskCred(tid int) (*watchq.Cred, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return nil, err
	}
	c := &watchq.Cred{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "Tgid":
			if len(f) > 0 {
				p, _ := strconv.Atoi(f[0])
				c.PID = int32(p)
			}
		case "Uid", "Gid":
			if len(f) < 2 {
				return nil, fmt.Errorf("/proc/%d/status: bad %s line", tid, k)
			}
			id, _ := strconv.ParseUint(f[1], 10, 32) // effective
			if k == "Uid" {
				c.UID = uint32(id)
			} else {
				c.GID = uint32(id)
			}
		case "Groups":
			for _, g := range f {
				id, _ := strconv.ParseUint(g, 10, 32)
				c.Groups = append(c.Groups, uint32(id))
			}
		}
	}
	if l, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/attr/current"); err == nil {
		c.Label = string(bytes.TrimRight(l, "\x00\n"))
		if c.Label == "unconfined" {
			c.Label = ""
		}
	}
	return c, nil
}

// int32Pair encodes int fildes[2] as pipe2 stores it.
func int32Pair(a, b int) []byte {
	return le.AppendUint32(le.AppendUint32(nil, uint32(int32(a))), uint32(int32(b)))
}
