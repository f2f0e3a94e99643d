// Package bpfring holds what watchq's eBPF tracers (the device source's
// blockerr and usbreset, the key source's keytrace) share: the maps and the
// last instructions of a program that sends one record to a ring buffer and
// counts the records a full ring dropped, and, on Linux, the Reader that
// loads those records and the drop count.
package bpfring

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Exit labels the instructions OutputOrDrop ends with, "return 0": a
// program jumps there to return without a record.
const Exit = "exit"

// Maps returns the specs of the maps OutputOrDrop refers to: a ring buffer
// named events of ringSize bytes (a power of two multiple of the page
// size), and the drop counter, a one-element u64 array named drops.
func Maps(events, drops string, ringSize uint32) map[string]*ebpf.MapSpec {
	return map[string]*ebpf.MapSpec{
		events: {Name: events, Type: ebpf.RingBuf, MaxEntries: ringSize},
		drops:  {Name: drops, Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1},
	}
}

// OutputOrDrop returns a program's last instructions: they send the size
// bytes at rec (a negative offset from the frame pointer) to the ring
// buffer events and, where the ring is full, add one to the drop counter
// drops, with the key in the 4 bytes below the record. In C:
//
//	if (bpf_ringbuf_output(&events, fp + rec, size, 0) != 0) {
//		u32 key = 0;	// at fp + rec - 4
//		u64 *n = bpf_map_lookup_elem(&drops, &key);
//		if (n)
//			__sync_fetch_and_add(n, 1);
//	}
//	return 0;	// Exit
//
// They clobber r0-r5.
func OutputOrDrop(events, drops string, rec int16, size int32) asm.Instructions {
	key := rec - 4
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference(events),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(rec)),
		asm.Mov.Imm(asm.R3, size),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.JEq.Imm(asm.R0, 0, Exit),
		asm.StoreImm(asm.RFP, key, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(drops),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, Exit),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(Exit),
		asm.Return(),
	}
}
