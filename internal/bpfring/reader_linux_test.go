//go:build linux

package bpfring_test

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/watchq/watchq/internal/bpfring"
	"github.com/watchq/watchq/internal/testenv"
)

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// TestReader runs a socket filter program built with Maps and OutputOrDrop
// (BPF_PROG_TEST_RUN) more often than its one-page ring holds records: the
// Reader must return each record the ring kept, Drops must count the rest
// once, and Close must wake a blocked Read with os.ErrClosed.
func TestReader(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	const value = 0x1122334455667788
	spec := &ebpf.CollectionSpec{
		Maps: bpfring.Maps("events", "drops", uint32(os.Getpagesize())),
		Programs: map[string]*ebpf.ProgramSpec{
			"prog": {
				Name: "wq_test_ring", Type: ebpf.SocketFilter, License: "GPL",
				Instructions: append(asm.Instructions{
					asm.LoadImm(asm.R1, value, asm.DWord),
					asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
				}, bpfring.OutputOrDrop("events", "drops", -8, 8)...),
			},
		},
	}
	coll, err := ebpf.NewCollection(spec)
	testenv.SkipIfUnsupported(t, "BPF ring buffer", err)
	r, err := bpfring.NewReader("test", coll, nopCloser{}, "events", "drops")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	// Each record takes 16 bytes of the ring (an 8-byte header).
	runs := os.Getpagesize()/16 + 10
	if _, err := coll.Programs["prog"].Run(&ebpf.RunOptions{Data: make([]byte, 14), Repeat: uint32(runs)}); err != nil {
		testenv.SkipIfUnsupported(t, "BPF_PROG_TEST_RUN", err)
	}
	read := 0
	for {
		r.SetDeadline(time.Now().Add(100 * time.Millisecond))
		s, err := r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 8 || binary.NativeEndian.Uint64(s) != value {
			t.Fatalf("record %x", s)
		}
		read++
	}
	drops, err := r.Drops()
	if err != nil || read == 0 || drops == 0 || read+int(drops) != runs {
		t.Fatalf("%d runs: %d records read, Drops = %d, %v", runs, read, drops, err)
	}
	if drops, err := r.Drops(); err != nil || drops != 0 {
		t.Fatalf("second Drops = %d, %v; want 0", drops, err)
	}

	r.SetDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Read()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close = %v, want os.ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}
