//go:build vmtest && runguest

package run_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/internal/vmtest/guest"
)

// The guest half of the comparisons with the real kernel. The C programs
// are built on the host by the host tests (TestEdgeInGuest,
// TestSamplesAgainstGuest in guest_test.go), which boot the guest with
// them at guestBin/... and compare what these tests hand back with what
// the same programs do under watchq run on the host. They build only with
// the runguest tag, which those host tests pass: a plain `make vmtest`
// has no programs for them and does not list them.
const guestBin = "/watchq/run"

func needProgram(t *testing.T, name string) string {
	t.Helper()
	p := guestBin + "/" + name
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not in the guest: the host test that boots the guest for these tests (guest_test.go) puts it there", p)
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

// TestGuestSamples runs the kernel's sample program and `keyctl watch @s`
// natively under the key scenario and hands their outputs back
// (samples-KIND.out) for TestSamplesAgainstGuest to compare with watchq
// run's on the host.
func TestGuestSamples(t *testing.T) {
	watchTest := needProgram(t, "watch_test")
	keyctl := testenv.RequireCommand(t, "keyctl")
	uid, gid := scenarioCred(t)
	for kind, argv := range map[string][]string{
		"watch_test": {watchTest},
		"keyctl":     {keyctl, "watch", "@s"},
	} {
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, keyctl, append([]string{"session", "-", os.Args[0], kind, "-"}, argv...)...)
			cmd.Env = append(os.Environ(), scenarioEnv+"=1")
			cmd.WaitDelay = 10 * time.Second
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			t.Logf("%s%s", stdout.String(), stderr.String())
			if err != nil {
				t.Fatalf("scenario with %s on the real kernel: %v", kind, err)
			}
			if err := guest.SaveArtifact(ctx, "samples-"+kind+".out", stdout.Bytes()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGuestPassthrough: on a kernel with the facility, watchq run runs
// PROG as it is: no filter, no no_new_privs.
func TestGuestPassthrough(t *testing.T) {
	status := needProgram(t, "status")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := watchq(ctx, "run", "--", status, "5").CombinedOutput()
	t.Logf("%s", out)
	if err := guest.SaveArtifact(ctx, "passthrough.out", out); err != nil {
		t.Error(err)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Errorf("watchq run -- status 5: %v, want exit status 5", err)
	}
}
