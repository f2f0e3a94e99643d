//go:build linux && amd64

package run

import "golang.org/x/sys/unix"

// Syscall numbers the filter traps, per ABI an x86-64 kernel runs
// (arch/x86/entry/syscalls/syscall_64.tbl and syscall_32.tbl). x32 calls
// arrive with AUDIT_ARCH_X86_64 and the __X32_SYSCALL_BIT set.
const (
	x32Bit = 0x40000000 // __X32_SYSCALL_BIT

	nrPipe2X64  = unix.SYS_PIPE2  // 293, common
	nrIoctlX64  = unix.SYS_IOCTL  // 16, 64-bit only
	nrKeyctlX64 = unix.SYS_KEYCTL // 250, common
	nrIoctlX32  = 514             // compat_sys_ioctl, x32 only

	nrPipe2I386  = 331
	nrIoctlI386  = 54
	nrKeyctlI386 = 288
)

// nativeArch is the AUDIT_ARCH of this machine's native ABI; compatArch is
// the one other ABI its kernel may run (IA32 emulation).
const (
	nativeArch = unix.AUDIT_ARCH_X86_64
	compatArch = unix.AUDIT_ARCH_I386
)

// abi names a trapped call's ABI, from its seccomp_data.
type abi uint8

const (
	abiX64 abi = iota
	abiX32
	abiI386
)

func (a abi) String() string {
	switch a {
	case abiX32:
		return "x32"
	case abiI386:
		return "i386"
	}
	return "x86-64"
}

// call is what a trapped syscall is, ABI aside.
type call uint8

const (
	callUnknown call = iota
	callPipe2
	callIoctl
	callKeyctl
)

// classify maps a seccomp_data (arch, nr) to the ABI and call.
func classify(arch uint32, nr int32) (abi, call) {
	switch arch {
	case nativeArch:
		a := abiX64
		n := nr
		if n&x32Bit != 0 {
			a, n = abiX32, n&^x32Bit
		}
		switch {
		case n == nrPipe2X64:
			return a, callPipe2
		case n == nrKeyctlX64:
			return a, callKeyctl
		case a == abiX64 && n == nrIoctlX64, a == abiX32 && n == nrIoctlX32:
			return a, callIoctl
		}
		return a, callUnknown
	case compatArch:
		switch nr {
		case nrPipe2I386:
			return abiI386, callPipe2
		case nrIoctlI386:
			return abiI386, callIoctl
		case nrKeyctlI386:
			return abiI386, callKeyctl
		}
		return abiI386, callUnknown
	}
	return abiX64, callUnknown
}

// keyctlNr is the keyctl syscall number to inject into a task of ABI a.
func keyctlNr(a abi) uint64 {
	switch a {
	case abiX32:
		return nrKeyctlX64 | x32Bit
	case abiI386:
		return nrKeyctlI386
	}
	return nrKeyctlX64
}

// syscallInsns are the two-byte instructions a trapped syscall can have
// entered through, which the injected call re-executes: syscall (0f 05)
// for x86-64 and x32, int $0x80 (cd 80) for i386 (a SYSENTER call returns
// to the vDSO's int $0x80 landing pad, so ip-2 is that instruction too).
var syscallInsns = [][2]byte{{0x0f, 0x05}, {0xcd, 0x80}}

// The injected call's registers, per ABI: x86-64 and x32 pass arguments in
// rdi, rsi, rdx, r10; i386 in ebx, ecx, edx, esi.
func setSyscallRegs(r *unix.PtraceRegs, a abi, nr uint64, args [4]uint64) {
	r.Rax = nr
	if a == abiI386 {
		r.Rbx, r.Rcx, r.Rdx, r.Rsi = args[0], args[1], args[2], args[3]
		return
	}
	r.Rdi, r.Rsi, r.Rdx, r.R10 = args[0], args[1], args[2], args[3]
}

// syscallResult is the return value in r after a call of ABI a.
func syscallResult(r *unix.PtraceRegs, a abi) int64 {
	if a == abiI386 {
		return int64(int32(uint32(r.Rax)))
	}
	return int64(r.Rax)
}

// regsIP and friends let the ptrace code stay architecture-neutral.
func regsIP(r *unix.PtraceRegs) uint64           { return r.Rip }
func setRegsIP(r *unix.PtraceRegs, ip uint64)    { r.Rip = ip }
func regsOrigNr(r *unix.PtraceRegs) int64        { return int64(r.Orig_rax) }
func setRegsOrigNr(r *unix.PtraceRegs, nr int64) { r.Orig_rax = uint64(nr) }
func setRegsResult(r *unix.PtraceRegs, v int64)  { r.Rax = uint64(v) }
