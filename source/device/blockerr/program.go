package blockerr

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/watchq/watchq/internal/bpfring"
)

// Names of the collection's maps and program.
const (
	eventsMap = "wq_blk_events"
	dropsMap  = "wq_blk_drops"
	progName  = "wq_blk_rq_error"
)

// eventSize is the ring buffer record: struct { u32 dev; s32 error; u64
// sector; }.
const eventSize = 16

// DefaultRingSize is the ring buffer's size in bytes (a power of two and a
// multiple of the page size): room for about 10 000 errors, each 16 bytes
// plus the ring's 8-byte header.
const DefaultRingSize = 256 << 10

// collectionSpec builds the program for a tracepoint layout. In C it reads:
//
//	int prog(void *ctx) {
//		s32 err = *(s32 *)(ctx + error_off);
//		if (err == 0)	// block_rq_complete also fires on success
//			return 0;
//		struct event e = { *(u32 *)(ctx + dev_off), err, *(sector_t *)(ctx + sector_off) };
//		// bpfring.OutputOrDrop:
//		if (bpf_ringbuf_output(&events, &e, sizeof(e), 0) != 0) {
//			u32 key = 0;
//			u64 *n = bpf_map_lookup_elem(&drops, &key);
//			if (n)
//				__sync_fetch_and_add(n, 1);
//		}
//		return 0;
//	}
func collectionSpec(l Layout, ringSize int) *ebpf.CollectionSpec {
	sectorSize := asm.DWord
	if l.Sector.Size == 4 {
		sectorSize = asm.Word
	}
	insns := append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, int16(l.Error.Offset), asm.Word),
		asm.JEq.Imm32(asm.R7, 0, bpfring.Exit),
		asm.LoadMem(asm.R1, asm.R6, int16(l.Dev.Offset), asm.Word),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.Word),
		asm.StoreMem(asm.RFP, -12, asm.R7, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, int16(l.Sector.Offset), sectorSize),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
	}, bpfring.OutputOrDrop(eventsMap, dropsMap, -16, eventSize)...)
	return &ebpf.CollectionSpec{
		Maps: bpfring.Maps(eventsMap, dropsMap, uint32(ringSize)),
		Programs: map[string]*ebpf.ProgramSpec{
			progName: {
				Name:         progName,
				Type:         ebpf.TracePoint,
				License:      "GPL",
				Instructions: insns,
			},
		},
	}
}
