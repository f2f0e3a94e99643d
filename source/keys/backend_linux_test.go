//go:build linux

package keys

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/kernel"
)

// TestAutoBackendProbeFailure: Auto picks a backend only on a conclusive
// probe. A probe that failed for a passing reason (EMFILE) fails Open with
// that error instead of settling on Poll for the Source's life; a kernel
// without the facility gives Poll.
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
	if src.Backend() != Poll {
		t.Errorf("Auto on a kernel without the facility: %v, want poll", src.Backend())
	}
}
