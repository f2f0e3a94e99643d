package keytrace

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/watchq/watchq/internal/bpfring"
)

// Names of the collection's maps and programs.
const (
	eventsMap   = "wq_key_events"
	dropsMap    = "wq_key_drops"
	inflightMap = "wq_key_calls"

	progEnterKeyctl  = "wq_key_keyctl"
	progEnterAddKey  = "wq_key_add"
	progEnterRequest = "wq_key_request"
	progExit         = "wq_key_exit"
)

// DefaultRingSize is the ring buffer's size in bytes: room for about 2 300
// events (each 112 bytes plus the ring's 8-byte header).
const DefaultRingSize = 256 << 10

// inflightEntries bounds the threads that can be inside a traced call at
// once; a call that finds the table full is counted as a drop.
const inflightEntries = 8192

// Layout is what the programs need to know about the running kernel: byte
// offsets of the fields they read, from its BTF.
type Layout struct {
	TaskCred    int32 // struct task_struct.cred
	CredThread  int32 // struct cred.thread_keyring
	CredProcess int32 // struct cred.process_keyring
	CredSession int32 // struct cred.session_keyring
	CredReqAuth int32 // struct cred.request_key_auth
	CredUser    int32 // struct cred.user
	CredUserNS  int32 // struct cred.user_ns
	UserUID     int32 // struct user_struct.uid
	KeySerial   int32 // struct key.serial
	KeyPayload  int32 // struct key.payload.data[0]
	RKADest     int32 // struct request_key_auth.dest_keyring
}

// Stack frame of every program (offsets from the frame pointer):
//
//	-8    u64 the map key: bpf_get_current_pid_tgid()
//	-128  the event being built, EventSize bytes (to -16)
//	-132  u32 the drop counter's map key (bpfring.OutputOrDrop's, and ours)
//	-144  u64 scratch
const (
	fpKey     = -8
	fpEvent   = -128
	fpDropKey = fpEvent - 4
	fpScratch = -144
)

// zeroEvent clears the event on the stack. It clobbers r1.
func zeroEvent() asm.Instructions {
	in := asm.Instructions{asm.Mov.Imm(asm.R1, 0)}
	for off := int16(0); off < EventSize; off += 8 {
		in = append(in, asm.StoreMem(asm.RFP, fpEvent+off, asm.R1, asm.DWord))
	}
	return in
}

// lookupCall finds the calling thread's entry in the in-flight table: r9 =
// the entry, or return 0. It clobbers r0-r5.
func lookupCall() asm.Instructions {
	return asm.Instructions{
		asm.FnGetCurrentPidTgid.Call(),
		asm.StoreMem(asm.RFP, fpKey, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0).WithReference(inflightMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, bpfring.Exit),
		asm.Mov.Reg(asm.R9, asm.R0),
	}
}

// stampDrops copies the drop counter into the event on the stack, so the
// reader can place a loss exactly. label names the instruction after it.
// It clobbers r0-r5.
func stampDrops(label string) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, fpDropKey, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(dropsMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpDropKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, label),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.StoreMem(asm.RFP, fpEvent+offDrops, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R1, 0).WithSymbol(label),
	}
}

// countDrop adds one to the drop counter and returns 0.
func countDrop() asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, fpDropKey, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(dropsMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpDropKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, bpfring.Exit),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Ja.Label(bpfring.Exit),
	}
}

// output sends the event on the stack and returns 0 (bpfring.OutputOrDrop,
// which ends the program).
func output() asm.Instructions {
	return bpfring.OutputOrDrop(eventsMap, dropsMap, fpEvent, EventSize)
}

// probeRead is bpf_probe_read_kernel(fp+dst, size, src+off). It clobbers
// r0-r5; src must be r6-r9.
func probeRead(dst int16, size int32, src asm.Register, off int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, int32(dst)),
		asm.Mov.Imm(asm.R2, size),
		asm.Mov.Reg(asm.R3, src),
		asm.Add.Imm(asm.R3, off),
		asm.FnProbeReadKernel.Call(),
	}
}

// loadPtr sets dst = *(u64 *)(src + off) through the scratch slot (0 where
// the read fails) and jumps to skip if it is NULL. It clobbers r0-r5.
func loadPtr(dst, src asm.Register, off int32, skip string) asm.Instructions {
	return append(probeRead(fpScratch, 8, src, off),
		asm.LoadMem(dst, asm.RFP, fpScratch, asm.DWord),
		asm.JEq.Imm(dst, 0, skip),
	)
}

// currentCred sets r8 = current->cred, or jumps to skip. It clobbers r0-r5.
func currentCred(l Layout, skip string) asm.Instructions {
	return append(asm.Instructions{
		asm.FnGetCurrentTask.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
	}, loadPtr(asm.R8, asm.R8, l.TaskCred, skip)...)
}

// keyringSerials writes the serials of the caller's thread, process and
// session keyrings and authorisation key into the event's Res[0], Res[1],
// Res[2] and Res[6], its real uid into UID and its user namespace into
// UserNS: lookup_user_key's view of @t, @p, @s and @a. In C:
//
//	const struct cred *c = current->cred;
//	if (c->thread_keyring) e.res[0] = c->thread_keyring->serial;
//	... process_keyring → res[1], session_keyring → res[2], request_key_auth → res[6]
//	e.uid = c->user->uid; e.user_ns = c->user_ns;
//
// p names its labels. It clobbers r0-r5, r7 and r8.
func keyringSerials(l Layout, p string) asm.Instructions {
	in := currentCred(l, p+"_done")
	for i, f := range []struct {
		off int32
		res int16
	}{{l.CredThread, 0}, {l.CredProcess, 1}, {l.CredSession, 2}, {l.CredReqAuth, 6}} {
		next := fmt.Sprintf("%s_%d", p, i)
		in = append(in, loadPtr(asm.R7, asm.R8, f.off, next)...)
		in = append(in, probeRead(fpEvent+offRes+4*f.res, 4, asm.R7, l.KeySerial)...)
		in = append(in, asm.Mov.Imm(asm.R0, 0).WithSymbol(next))
	}
	in = append(in, loadPtr(asm.R7, asm.R8, l.CredUser, p+"_nouser")...)
	in = append(in, probeRead(fpEvent+offUID, 4, asm.R7, l.UserUID)...)
	in = append(in, asm.Mov.Imm(asm.R0, 0).WithSymbol(p+"_nouser"))
	in = append(in, probeRead(fpEvent+offUserNS, 8, asm.R8, l.CredUserNS)...)
	return append(in, asm.Mov.Imm(asm.R0, 0).WithSymbol(p+"_done"))
}

// requestor writes the caller's authorisation key into AuthKey and the
// keyring of the request_key call it serves into Res[7] (where
// KEY_SPEC_REQUESTOR_KEYRING points, and where an instantiation with a
// special ring id links the key). In C:
//
//	struct key *a = current->cred->request_key_auth;
//	if (a) {
//		e.authkey = a->serial;
//		struct request_key_auth *rka = a->payload.data[0];
//		if (rka && rka->dest_keyring) e.res[7] = rka->dest_keyring->serial;
//	}
//
// It clobbers r0-r5, r7 and r8.
func requestor(l Layout) asm.Instructions {
	in := currentCred(l, "rq_done")
	in = append(in, loadPtr(asm.R7, asm.R8, l.CredReqAuth, "rq_done")...)
	in = append(in, probeRead(fpEvent+offAuthKey, 4, asm.R7, l.KeySerial)...)
	in = append(in, loadPtr(asm.R7, asm.R7, l.KeyPayload, "rq_done")...)
	in = append(in, loadPtr(asm.R7, asm.R7, l.RKADest, "rq_done")...)
	in = append(in, probeRead(fpEvent+offRes+4*7, 4, asm.R7, l.KeySerial)...)
	return append(in, asm.Mov.Imm(asm.R0, 0).WithSymbol("rq_done"))
}

// enterProgram is the sys_enter program of system call nr; argOffs are the
// tracepoint offsets of the arguments it keeps, stored as Args[0], Args[1],
// ... (a negative offset skips a slot). In C, for keyctl:
//
//	int enter(struct trace_event_raw_sys_enter_keyctl *ctx) {
//		if (ctx->option == MARKER) {	// Tracer.Marker: report at once
//			struct event e = { .kind = MARKER, .tgid = pid_tgid >> 32, .args[0] = ctx->arg2, .drops = drops[0] };
//			keyring_serials(&e);
//			output(&e);
//			return 0;
//		}
//		if (!traced(ctx->option))
//			return 0;
//		struct event e = { .kind = SYSCALL, .nr = nr, .option = ctx->option, .tgid = pid_tgid >> 32,
//				   .args = { ctx->arg2, ctx->arg3, ctx->arg4, ctx->arg5 } };
//		requestor(&e);	// keyctl: the authorisation key and the requestor's keyring
//		if (bpf_map_update_elem(&calls, &pid_tgid, &e, BPF_ANY))
//			drops[0]++;	// the table is full: this call is lost
//		return 0;
//	}
func enterProgram(l Layout, nr uint32, argOffs []int16) asm.Instructions {
	in := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	if nr == NrKeyctl {
		in = append(in,
			asm.LoadMem(asm.R7, asm.R6, 16, asm.Word), // option (an int in an 8-byte field)
			asm.JEq.Imm32(asm.R7, MarkerOption, "marker"),
		)
		for _, op := range tracedOps {
			in = append(in, asm.JEq.Imm32(asm.R7, op, "keep"))
		}
		in = append(in, asm.Ja.Label(bpfring.Exit))
	}
	keep := append(zeroEvent(), asm.StoreImm(asm.RFP, fpEvent+offKind, KindSyscall, asm.Word))
	if len(in) > 1 {
		keep[0] = keep[0].WithSymbol("keep")
	}
	in = append(in, keep...)
	in = append(in, asm.StoreImm(asm.RFP, fpEvent+offNr, int64(nr), asm.Word))
	if nr == NrKeyctl {
		in = append(in, asm.StoreMem(asm.RFP, fpEvent+offOption, asm.R7, asm.Word))
	}
	in = append(in,
		asm.FnGetCurrentPidTgid.Call(),
		asm.StoreMem(asm.RFP, fpKey, asm.R0, asm.DWord),
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.RFP, fpEvent+offTGID, asm.R0, asm.Word),
	)
	for i, off := range argOffs {
		if off < 0 {
			continue
		}
		in = append(in,
			asm.LoadMem(asm.R1, asm.R6, off, asm.DWord),
			asm.StoreMem(asm.RFP, fpEvent+offArgs+int16(8*i), asm.R1, asm.DWord),
		)
	}
	if nr == NrKeyctl {
		in = append(in, requestor(l)...)
	}
	in = append(in,
		asm.LoadMapPtr(asm.R1, 0).WithReference(inflightMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpKey),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, fpEvent),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
		asm.JEq.Imm(asm.R0, 0, bpfring.Exit),
	)
	in = append(in, countDrop()...)
	if nr == NrKeyctl {
		marker := append(zeroEvent(), asm.StoreImm(asm.RFP, fpEvent+offKind, KindMarker, asm.Word))
		marker[0] = marker[0].WithSymbol("marker")
		in = append(in, marker...)
		in = append(in,
			asm.FnGetCurrentPidTgid.Call(),
			asm.RSh.Imm(asm.R0, 32),
			asm.StoreMem(asm.RFP, fpEvent+offTGID, asm.R0, asm.Word),
			asm.LoadMem(asm.R1, asm.R6, 24, asm.DWord), // arg2: the cookie
			asm.StoreMem(asm.RFP, fpEvent+offArgs, asm.R1, asm.DWord),
		)
		in = append(in, keyringSerials(l, "mk")...)
		in = append(in, stampDrops("marker_out")...)
		in = append(in, output()...)
	} else {
		in = append(in, asm.Mov.Imm(asm.R0, 0).WithSymbol(bpfring.Exit), asm.Return())
	}
	return in
}

// exitProgram is the sys_exit program of all three system calls. In C:
//
//	int exit(struct trace_event_raw_sys_exit *ctx) {
//		struct event *c = bpf_map_lookup_elem(&calls, &pid_tgid);
//		if (!c)
//			return 0;	// not a traced call
//		c->ret = ctx->ret;
//		struct event e = *c;
//		bpf_map_delete_elem(&calls, &pid_tgid);
//		if (e.ret < 0)
//			return 0;	// failed calls change nothing
//		keyring_serials(&e);	// the caller's @t @p @s @a, uid, user_ns
//		e.drops = drops[0];
//		output(&e);
//		return 0;
//	}
func exitProgram(l Layout) asm.Instructions {
	in := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	in = append(in, lookupCall()...)
	in = append(in,
		asm.LoadMem(asm.R7, asm.R6, 16, asm.DWord), // ret
		asm.StoreMem(asm.R9, offRet, asm.R7, asm.DWord),
	)
	for off := int16(0); off < EventSize; off += 8 {
		in = append(in,
			asm.LoadMem(asm.R1, asm.R9, off, asm.DWord),
			asm.StoreMem(asm.RFP, fpEvent+off, asm.R1, asm.DWord),
		)
	}
	in = append(in,
		asm.LoadMapPtr(asm.R1, 0).WithReference(inflightMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpKey),
		asm.FnMapDeleteElem.Call(),
		asm.JSLT.Imm(asm.R7, 0, bpfring.Exit),
	)
	in = append(in, keyringSerials(l, "ex")...)
	in = append(in, stampDrops("exit_out")...)
	return append(in, output()...)
}

// Tracepoint offsets of the syscall arguments (the sys_enter formats: the
// arguments are 8-byte fields from offset 16).
var (
	keyctlArgs  = []int16{24, 32, 40, 48} // arg2..arg5
	addKeyArgs  = []int16{-1, -1, -1, 48} // ringid, the fifth argument
	requestArgs = []int16{-1, -1, -1, 40} // destringid, the fourth
)

// collectionSpec builds the programs for a kernel layout.
func collectionSpec(l Layout, ringSize int) *ebpf.CollectionSpec {
	maps := bpfring.Maps(eventsMap, dropsMap, uint32(ringSize))
	maps[inflightMap] = &ebpf.MapSpec{Name: inflightMap, Type: ebpf.Hash, KeySize: 8, ValueSize: EventSize, MaxEntries: inflightEntries}
	tp := func(name string, in asm.Instructions) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Name: name, Type: ebpf.TracePoint, License: "GPL", Instructions: in}
	}
	return &ebpf.CollectionSpec{
		Maps: maps,
		Programs: map[string]*ebpf.ProgramSpec{
			progEnterKeyctl:  tp(progEnterKeyctl, enterProgram(l, NrKeyctl, keyctlArgs)),
			progEnterAddKey:  tp(progEnterAddKey, enterProgram(l, NrAddKey, addKeyArgs)),
			progEnterRequest: tp(progEnterRequest, enterProgram(l, NrRequestKey, requestArgs)),
			progExit:         tp(progExit, exitProgram(l)),
		},
	}
}
