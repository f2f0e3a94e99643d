//go:build linux

package blockerr_test

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/source/device/blockerr"
	"golang.org/x/sys/unix"
)

const (
	diskSize = 8 << 20
	badOff   = 4 << 20 // far from the start and end a partition scan reads
	badLen   = 64 << 10
)

func openTracer(t *testing.T) *blockerr.Tracer {
	t.Helper()
	testenv.RequireRoot(t)
	tr, err := blockerr.Open(blockerr.Config{})
	testenv.SkipIfUnsupported(t, "eBPF tracepoint program on block:block_rq_error", err)
	t.Cleanup(func() { tr.Close() })
	return tr
}

// nextFor returns the next error on dev, skipping other devices' errors.
func nextFor(t *testing.T, tr *blockerr.Tracer, dev uint64) blockerr.Event {
	t.Helper()
	tr.SetDeadline(time.Now().Add(10 * time.Second))
	for {
		var e blockerr.Event
		if err := tr.Read(&e); err != nil {
			t.Fatalf("no block error for dev %#x: %v", dev, err)
		}
		if uint64(e.Dev) == dev {
			return e
		}
	}
}

// TestBlockError reads a FUSE-backed loop device where the FUSE file fails
// with EIO. Reads outside the bad range and inside it alternate; every
// error the tracer reports must be the next bad read's, so the good reads
// produced none, without waiting for an absence.
func TestBlockError(t *testing.T) {
	tr := openTracer(t)
	t.Logf("attached to %s", tr.Tracepoint)
	file := devtest.BadFile(t, diskSize, badOff, badLen)
	loop := devtest.AttachLoop(t, file, unix.LO_FLAGS_READ_ONLY)
	for i, bad := range []int64{badOff, badOff + 8192} {
		if err := devtest.DirectRead(loop.Path, int64(i)*4096); err != nil {
			t.Fatalf("good read at %d: %v", i*4096, err)
		}
		if err := devtest.DirectRead(loop.Path, bad); !errors.Is(err, syscall.EIO) {
			t.Fatalf("bad read at %d = %v, want EIO", bad, err)
		}
		e := nextFor(t, tr, loop.Dev)
		if e.Sector != uint64(bad/512) || e.Errno != -int32(syscall.EIO) {
			t.Fatalf("event %+v, want sector %d errno -EIO", e, bad/512)
		}
		if st, known := blockerr.Subtype(e.Errno); st != 10 || !known {
			t.Fatalf("subtype %d", st)
		}
	}
	if n, err := tr.Drops(); err != nil || n != 0 {
		t.Fatalf("Drops = %d, %v", n, err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal(err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	tr := openTracer(t)
	done := make(chan error, 1)
	go func() {
		var e blockerr.Event
		done <- tr.Read(&e)
	}()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, watchq.ErrClosed) || !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close = %v, want watchq.ErrClosed", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}
