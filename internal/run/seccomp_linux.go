//go:build linux && amd64

package run

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/watchq/watchq/kernel"
	"golang.org/x/sys/unix"
)

// The user-notification structures of include/uapi/linux/seccomp.h. Their
// sizes are fixed by the ioctl numbers (SECCOMP_IOCTL_NOTIF_RECV is
// _IOWR('!', 0, struct seccomp_notif), 0x50 bytes) and checked against
// SECCOMP_GET_NOTIF_SIZES by checkNotifSizes.
type (
	// seccompData is struct seccomp_data.
	seccompData struct {
		Nr                 int32
		Arch               uint32
		InstructionPointer uint64
		Args               [6]uint64
	}
	// seccompNotif is struct seccomp_notif.
	seccompNotif struct {
		ID    uint64
		Pid   uint32
		Flags uint32
		Data  seccompData
	}
	// seccompNotifResp is struct seccomp_notif_resp.
	seccompNotifResp struct {
		ID    uint64
		Val   int64
		Error int32
		Flags uint32
	}
	// seccompNotifAddfd is struct seccomp_notif_addfd.
	seccompNotifAddfd struct {
		ID         uint64
		Flags      uint32
		Srcfd      uint32
		Newfd      uint32
		NewfdFlags uint32
	}
	// seccompNotifSizes is struct seccomp_notif_sizes.
	seccompNotifSizes struct {
		Notif, NotifResp, Data uint16
	}
)

// seccompData field offsets the filter loads (32-bit words, little-endian:
// an argument's low half is at its offset).
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16
)

func offArg(i int) uint32 { return offArg0 + 8*uint32(i) }

// checkNotifSizes makes sure the kernel's structures are the ones above.
func checkNotifSizes() error {
	var s seccompNotifSizes
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&s))); e != 0 {
		return fmt.Errorf("seccomp(SECCOMP_GET_NOTIF_SIZES): %w", e)
	}
	if int(s.Notif) != int(unsafe.Sizeof(seccompNotif{})) || int(s.NotifResp) != int(unsafe.Sizeof(seccompNotifResp{})) || int(s.Data) != int(unsafe.Sizeof(seccompData{})) {
		return fmt.Errorf("seccomp notification sizes %+v differ from this build's", s)
	}
	return nil
}

// bpfProg assembles a classic BPF program with symbolic jump targets.
type bpfProg struct {
	ins    []unix.SockFilter
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at     int
	jt, jf string // "" means fall through
}

func (p *bpfProg) label(name string) { p.labels[name] = len(p.ins) }

func (p *bpfProg) ldw(off uint32) {
	p.ins = append(p.ins, unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off})
}

// jeq jumps to jt when A == k, else to jf ("" falls through).
func (p *bpfProg) jeq(k uint32, jt, jf string) {
	p.fixups = append(p.fixups, fixup{at: len(p.ins), jt: jt, jf: jf})
	p.ins = append(p.ins, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k})
}

// jset jumps to jt when A & k != 0, else to jf.
func (p *bpfProg) jset(k uint32, jt, jf string) {
	p.fixups = append(p.fixups, fixup{at: len(p.ins), jt: jt, jf: jf})
	p.ins = append(p.ins, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: k})
}

func (p *bpfProg) ret(k uint32) {
	p.ins = append(p.ins, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: k})
}

func (p *bpfProg) assemble() ([]unix.SockFilter, error) {
	rel := func(from int, name string) (int, error) {
		if name == "" {
			return 0, nil
		}
		to, ok := p.labels[name]
		if !ok {
			return 0, fmt.Errorf("bpf: no label %q", name)
		}
		d := to - from - 1
		if d < 0 {
			return 0, fmt.Errorf("bpf: backward jump to %q", name)
		}
		return d, nil
	}
	for _, f := range p.fixups {
		jt, err := rel(f.at, f.jt)
		if err != nil {
			return nil, err
		}
		jf, err := rel(f.at, f.jf)
		if err != nil {
			return nil, err
		}
		if jt > 255 || jf > 255 {
			return nil, errors.New("bpf: jump too far")
		}
		p.ins[f.at].Jt, p.ins[f.at].Jf = uint8(jt), uint8(jf)
	}
	return p.ins, nil
}

func newProg() *bpfProg { return &bpfProg{labels: make(map[string]int)} }

// The ioctls the queue filter traps: the two of <linux/watch_queue.h>,
// FIONREAD (keyutils' watch_sync counts queued bytes with it), and watchq's
// own device-watch ioctl.
var trappedIoctls = []uint32{kernel.IocWatchQueueSetSize, kernel.IocWatchQueueSetFilter, fionread, IocWatchDevices}

// fionread is FIONREAD (TIOCINQ in x/sys/unix).
const fionread = unix.TIOCINQ

// filter traps pipe2 with O_NOTIFICATION_PIPE (O_EXCL), the trapped
// ioctls and keyctl(KEYCTL_WATCH_KEY), in every ABI the kernel runs;
// everything else is allowed at once. (One filter: a task may have only
// one filter with a listener; a second NEW_LISTENER is EBUSY.)
func filter() ([]unix.SockFilter, error) {
	p := newProg()
	p.ldw(offArch)
	p.jeq(nativeArch, "", "notnative")
	p.ldw(offNr)
	p.jeq(nrPipe2X64, "pipe2", "")
	p.jeq(nrIoctlX64, "ioctl", "")
	p.jeq(nrKeyctlX64, "keyctl", "")
	p.jeq(nrPipe2X64|x32Bit, "pipe2", "")
	p.jeq(nrIoctlX32|x32Bit, "ioctl", "")
	p.jeq(nrKeyctlX64|x32Bit, "keyctl", "allow")
	p.label("notnative")
	p.jeq(compatArch, "", "allow")
	p.ldw(offNr)
	p.jeq(nrPipe2I386, "pipe2", "")
	p.jeq(nrIoctlI386, "ioctl", "")
	p.jeq(nrKeyctlI386, "keyctl", "allow")

	p.label("pipe2")
	p.ldw(offArg(1)) // int flags
	p.jset(uint32(kernel.ONotificationPipe), "notify", "allow")

	p.label("keyctl")
	p.ldw(offArg(0)) // int option
	p.jeq(unix.KEYCTL_WATCH_KEY, "notify", "allow")

	p.label("ioctl")
	p.ldw(offArg(1)) // unsigned int cmd
	for i, c := range trappedIoctls {
		jf := ""
		if i == len(trappedIoctls)-1 {
			jf = "allow"
		}
		p.jeq(c, "notify", jf)
	}

	p.label("notify")
	p.ret(unix.SECCOMP_RET_USER_NOTIF)
	p.label("allow")
	p.ret(unix.SECCOMP_RET_ALLOW)
	return p.assemble()
}

// installFilter loads prog for the calling thread with a new listener and
// returns the listener's fd. The caller must hold no_new_privs (or
// CAP_SYS_ADMIN) and be locked to its OS thread.
func installFilter(prog []unix.SockFilter, flags uintptr) (int, error) {
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER|flags, uintptr(unsafe.Pointer(&fp)))
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// notifRecv receives one notification (blocking). It fails with ENOENT
// when the notifying task went away between poll and receive.
func notifRecv(fd int, n *seccompNotif) error {
	*n = seccompNotif{}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
}

// notifSend answers notification id with val or errno, or lets the call
// continue into the kernel.
func notifSend(fd int, id uint64, val int64, errno unix.Errno, cont bool) error {
	r := seccompNotifResp{ID: id, Val: val}
	if errno != 0 {
		r.Error = -int32(errno)
		r.Val = 0
	}
	if cont {
		r = seccompNotifResp{ID: id, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
}

// notifIDValid reports whether notification id is still pending (its task
// still waits in the trapped call).
func notifIDValid(fd int, id uint64) bool {
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// notifAddFd installs srcfd into the notifying task's fd table and returns
// the number it got there.
func notifAddFd(fd int, id uint64, srcfd int, cloexec bool) (int, error) {
	a := seccompNotifAddfd{ID: id, Srcfd: uint32(srcfd)}
	if cloexec {
		a.NewfdFlags = unix.O_CLOEXEC
	}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_ADDFD, uintptr(unsafe.Pointer(&a)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func ioctlPtr(fd int, req uint, p unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(p))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}
