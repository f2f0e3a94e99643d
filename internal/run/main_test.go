//go:build linux && amd64

package run_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/cli"
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

// cdir holds the C programs the host tests build (host_test.go); TestMain
// removes it.
var cdir string
