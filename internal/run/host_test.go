//go:build linux && amd64 && !vmtest

package run_test

// Helpers of the host tests. The host tests (files built with !vmtest) need
// seccomp, FUSE and, for the comparisons, qemu: they run on the host and
// drive the guest from there; the guest binary (tag vmtest) holds only
// TestMain, the scenario driver and the guest halves.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/testenv"
)

// inSession wraps cmd in `keyctl session -`: a new anonymous session
// keyring for it and everything it starts.
func inSession(t testing.TB, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	keyctl := testenv.RequireCommand(t, "keyctl")
	cmd.Args = append([]string{keyctl, "session", "-"}, cmd.Args...)
	cmd.Path = keyctl
	return cmd
}

var (
	cmu   sync.Mutex
	built = map[string]string{}
)

// buildC compiles testdata/NAME.c static (once per test binary) and returns
// the program's path.
func buildC(t testing.TB, name string, flags ...string) string {
	t.Helper()
	gcc := testenv.RequireCommand(t, "gcc")
	cmu.Lock()
	defer cmu.Unlock()
	key := name + " " + strings.Join(flags, " ")
	if p, ok := built[key]; ok {
		return p
	}
	if cdir == "" {
		d, err := os.MkdirTemp("", "watchq-run-test-")
		if err != nil {
			t.Fatal(err)
		}
		cdir = d
	}
	out := filepath.Join(cdir, fmt.Sprintf("%s-%d", name, len(built)))
	args := append([]string{"-static", "-O2", "-Wall", "-o", out}, flags...)
	args = append(args, filepath.Join("testdata", name+".c"))
	if b, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	built[key] = out
	return out
}

var (
	shimOnce sync.Once
	shimErr  error
)

// requireShim skips (or fails, strict) unless watchq run can supervise a
// program on this machine: seccomp user notification with the flags it
// needs, FUSE, ptrace.
func requireShim(t testing.TB) {
	t.Helper()
	shimOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var stderr bytes.Buffer
		cmd := watchq(ctx, "run", "--always", "--", "true")
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			shimErr = fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
		}
	})
	testenv.SkipIfUnsupported(t, "watchq run", shimErr)
}

// result is how a supervised program ended.
type result struct {
	stdout, stderr string
	err            error
}

// runCmd runs cmd with a timeout, capturing its output.
func runCmd(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}
