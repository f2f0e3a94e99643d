//go:build linux && amd64

package run_test

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

	"github.com/watchq/watchq/internal/cli"
	"github.com/watchq/watchq/internal/testenv"
)

// cliEnv makes the test binary act as the watchq command (its helper
// included), so that tests can start the supervisor as a process of its
// own, inside a session keyring of its own (`keyctl session - watchq run`):
// a key watch's records come from keyrings the supervisor can read.
const cliEnv = "WATCHQ_RUN_TEST_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(scenarioEnv) == "1" {
		os.Exit(scenarioMain(os.Args[1:]))
	}
	if os.Getenv(cliEnv) == "1" {
		os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	if cdir != "" {
		os.RemoveAll(cdir)
	}
	os.Exit(code)
}

// watchq returns a command running "watchq ARGS" (this binary as the CLI).
func watchq(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

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
	cdir  string
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
