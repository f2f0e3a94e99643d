// Package cli implements the watchq command line: watching keys and
// devices through an engine queue, decoding captured record streams,
// showing the daemon's statistics, and generating the man pages and shell
// completion scripts. Each command lives in its own file; cmd/watchq only
// calls Main.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq/internal/run"
	"github.com/watchq/watchq/internal/version"
)

// Exit statuses.
const (
	ExitOK    = 0 // success, or stopped by SIGINT/SIGTERM
	ExitError = 1 // the command failed
	ExitUsage = 2 // bad flags or arguments
)

// usageError marks an error in the command line itself.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Main runs the watchq command line with args (without the program name),
// printing any error once to stderr as "watchq: …", and returns the exit
// status.
func Main(args []string, stdout, stderr io.Writer) int {
	run.MaybeHelper() // watchq run's helper never gets further
	root := NewRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetIn(os.Stdin)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var es progStatus
	if errors.As(err, &es) {
		return int(es)
	}
	// Errors from the engine and its packages name themselves
	// ("watchq: queue closed"); the message is printed once, with one
	// prefix.
	msg := strings.ReplaceAll(err.Error(), ": watchq: ", ": ")
	fmt.Fprintf(stderr, "watchq: %s\n", strings.TrimPrefix(msg, "watchq: "))
	var ue usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitError
}

// NewRoot returns the root command with every subcommand attached.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "watchq",
		Short: "Watch Linux key and device notifications through a watchq queue",
		Long: `watchq watches keyrings and devices through watchq's general notification
queue -- Linux's watch_queue rebuilt in Go -- and prints each record as a
line for people (--format line, the default on a terminal):

    2026-12-01T23:00:00.123456Z key 805056093 linked key=1035096409 tag=1

in the format of the kernel's sample program (--format sample,
samples/watch_queue/watch_test.c), as keyutils' "keyctl watch" prints
(--format keyctl), or as JSON lines (--format json). It also decodes captured record streams,
shows the watchqd daemon's queues and counters, forwards a host's records
to a NATS JetStream stream (watchq forward) and reads a fleet's records
from it (watchq watch --from). The daemon is described in
watchqd(8) and its configuration in watchqd.conf(5).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version.String("watchq"),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newWatchCommand(), newDecodeCommand(), newStatCommand(), newForwardCommand(), newGenDocsCommand(), newRunCommand())
	return root
}

// positional wraps a cobra argument validator so its errors are usage
// errors.
func positional(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
