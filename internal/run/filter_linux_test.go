//go:build linux && amd64

package run

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/watchq/watchq/kernel"
	"golang.org/x/sys/unix"
)

// runBPF interprets the classic BPF subset the filter uses over d.
func runBPF(t *testing.T, prog []unix.SockFilter, d seccompData) uint32 {
	t.Helper()
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&d)), unsafe.Sizeof(d))
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a = binary.LittleEndian.Uint32(raw[in.K:])
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if a == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			if a&in.K != 0 {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("instruction %d: unexpected code %#x", pc, in.Code)
		}
	}
	t.Fatal("fell off the end of the program")
	return 0
}

func TestFilterDecisions(t *testing.T) {
	prog, err := filter()
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) > 64 {
		t.Errorf("filter has %d instructions; every system call runs it", len(prog))
	}
	const (
		trap  = unix.SECCOMP_RET_USER_NOTIF
		allow = unix.SECCOMP_RET_ALLOW
		x64   = unix.AUDIT_ARCH_X86_64
		i386  = unix.AUDIT_ARCH_I386
		np    = kernel.ONotificationPipe
	)
	hi := uint64(0xdead) << 32 // high halves the kernel ignores
	for _, c := range []struct {
		name string
		arch uint32
		nr   int32
		args [6]uint64
		want uint32
	}{
		{"pipe2 O_NOTIFICATION_PIPE", x64, unix.SYS_PIPE2, [6]uint64{0, np}, trap},
		{"pipe2 O_NOTIFICATION_PIPE|O_CLOEXEC", x64, unix.SYS_PIPE2, [6]uint64{0, np | unix.O_CLOEXEC}, trap},
		{"pipe2 plain", x64, unix.SYS_PIPE2, [6]uint64{0, unix.O_CLOEXEC}, allow},
		{"pipe", x64, unix.SYS_PIPE, [6]uint64{0}, allow},
		{"ioctl SET_SIZE", x64, unix.SYS_IOCTL, [6]uint64{3, kernel.IocWatchQueueSetSize}, trap},
		{"ioctl SET_SIZE, high bits", x64, unix.SYS_IOCTL, [6]uint64{3, hi | kernel.IocWatchQueueSetSize}, trap},
		{"ioctl SET_FILTER", x64, unix.SYS_IOCTL, [6]uint64{3, kernel.IocWatchQueueSetFilter}, trap},
		{"ioctl FIONREAD", x64, unix.SYS_IOCTL, [6]uint64{3, unix.TIOCINQ}, trap},
		{"ioctl watch devices", x64, unix.SYS_IOCTL, [6]uint64{3, IocWatchDevices}, trap},
		{"ioctl TCGETS", x64, unix.SYS_IOCTL, [6]uint64{0, unix.TCGETS}, allow},
		{"keyctl WATCH_KEY", x64, unix.SYS_KEYCTL, [6]uint64{unix.KEYCTL_WATCH_KEY, 1, 3, 1}, trap},
		{"keyctl WATCH_KEY, high bits", x64, unix.SYS_KEYCTL, [6]uint64{hi | unix.KEYCTL_WATCH_KEY}, trap},
		{"keyctl DESCRIBE", x64, unix.SYS_KEYCTL, [6]uint64{unix.KEYCTL_DESCRIBE}, allow},
		{"read", x64, unix.SYS_READ, [6]uint64{3}, allow},
		{"write", x64, unix.SYS_WRITE, [6]uint64{3, 0, unix.KEYCTL_WATCH_KEY}, allow},
		{"x32 pipe2 O_NOTIFICATION_PIPE", x64, unix.SYS_PIPE2 | x32Bit, [6]uint64{0, np}, trap},
		{"x32 ioctl SET_SIZE", x64, nrIoctlX32 | x32Bit, [6]uint64{3, kernel.IocWatchQueueSetSize}, trap},
		{"x32 keyctl WATCH_KEY", x64, unix.SYS_KEYCTL | x32Bit, [6]uint64{unix.KEYCTL_WATCH_KEY}, trap},
		{"x32 read", x64, unix.SYS_READ | x32Bit, [6]uint64{3}, allow},
		{"i386 pipe2 O_NOTIFICATION_PIPE", i386, nrPipe2I386, [6]uint64{0, np}, trap},
		{"i386 pipe2 plain", i386, nrPipe2I386, [6]uint64{0, 0}, allow},
		{"i386 ioctl SET_FILTER", i386, nrIoctlI386, [6]uint64{3, kernel.IocWatchQueueSetFilter}, trap},
		{"i386 keyctl WATCH_KEY", i386, nrKeyctlI386, [6]uint64{unix.KEYCTL_WATCH_KEY}, trap},
		{"i386 nr 293 (not pipe2 there)", i386, unix.SYS_PIPE2, [6]uint64{0, np}, allow},
		{"i386 nr 16 (not ioctl there)", i386, unix.SYS_IOCTL, [6]uint64{3, kernel.IocWatchQueueSetSize}, allow},
	} {
		got := runBPF(t, prog, seccompData{Nr: c.nr, Arch: c.arch, Args: c.args})
		if got != c.want {
			t.Errorf("%s: %#x, want %#x", c.name, got, c.want)
		}
		if a, k := classify(c.arch, c.nr); got == trap && k == callUnknown {
			t.Errorf("%s: trapped but classified %v/%v", c.name, a, k)
		}
	}
}
