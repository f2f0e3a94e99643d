//go:build vmtest

package run_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/internal/vmtest/guest"
)

// The guest half of the comparisons with the real kernel. The C programs
// are built on the host by the host tests (TestEdgeInGuest,
// TestSamplesAgainstGuest), which boot the guest with them at
// guestBin/...; a plain `make vmtest` has none and these tests do not
// apply there.
const guestBin = "/watchq/run"

func needProgram(t *testing.T, name string) string {
	t.Helper()
	p := guestBin + "/" + name
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s not in the guest: this test runs when the host test that builds it boots the guest", p)
	}
	return p
}

// TestGuestEdge runs the edge-semantics program natively on the real
// kernel and hands its output back.
func TestGuestEdge(t *testing.T) {
	edge := needProgram(t, "edge")
	keyctl := testenv.RequireCommand(t, "keyctl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, keyctl, "session", "-", edge).CombinedOutput()
	t.Logf("%s", out)
	if serr := guest.SaveArtifact(ctx, "edge.out", out); serr != nil {
		t.Error(serr)
	}
	if err != nil {
		t.Fatalf("edge on the real kernel: %v", err)
	}
}
