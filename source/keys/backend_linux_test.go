//go:build linux

package keys

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
)

// TestAutoBackendProbeFailure: Auto picks a backend only on conclusive
// answers. A probe that failed for a passing reason (EMFILE) fails Open
// with that error instead of settling on a lesser backend for the
// Source's life; a kernel without the facility gives Traced or Poll; a
// tracer load that failed on EMFILE fails Open, one the kernel refused
// gives Poll.
func TestAutoBackendProbeFailure(t *testing.T) {
	t.Setenv(BackendEnv, "")
	old := probeKernel
	t.Cleanup(func() { probeKernel = old })
	eng := watchq.NewEngine(watchq.Config{})

	probeKernel = func() error { return &kernel.OpError{Op: "pipe2(O_NOTIFICATION_PIPE)", Err: unix.EMFILE} }
	src, err := Open(context.Background(), Config{Engine: eng})
	if err == nil {
		src.Close()
		t.Fatalf("Open with a failed probe chose %v, want an error", src.Backend())
	}
	if !errors.Is(err, unix.EMFILE) || errors.Is(err, kernel.ErrNotSupported) {
		t.Errorf("Open with a failed probe: %v, want EMFILE", err)
	}

	probeKernel = func() error {
		return &kernel.NotSupportedError{Op: "pipe2(O_NOTIFICATION_PIPE)", Missing: kernel.MissingWatchQueue, Errno: unix.ENOPKG}
	}
	src, err = Open(context.Background(), Config{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if b := src.Backend(); b != Traced && b != Poll {
		t.Errorf("Auto on a kernel without the facility: %v, want traced or poll", b)
	}

	// The traced backend's load failing for a passing reason decides
	// nothing either; one the kernel refuses falls back to poll.
	oldTraced := tryTraced
	t.Cleanup(func() { tryTraced = oldTraced })
	tryTraced = func(*Source) (*tracedBackend, error) { return nil, fmt.Errorf("keytrace: load: %w", unix.EMFILE) }
	if src, err := Open(context.Background(), Config{Engine: eng}); !errors.Is(err, unix.EMFILE) {
		if err == nil {
			src.Close()
		}
		t.Errorf("Open with the tracer failing on EMFILE = %v, want EMFILE", err)
	}
	tryTraced = func(*Source) (*tracedBackend, error) { return nil, fmt.Errorf("keytrace: load: %w", unix.EPERM) }
	src2, err := Open(context.Background(), Config{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	defer src2.Close()
	if src2.Backend() != Poll || !errors.Is(src2.Fallback(), unix.EPERM) {
		t.Errorf("Auto with the tracer refused: %v (fallback %v), want poll (EPERM)", src2.Backend(), src2.Fallback())
	}
}
