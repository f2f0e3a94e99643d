package cli

import (
	"errors"
	"os"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/internal/run"
)

// progStatus is an error that is only an exit status: Main returns it
// without a message (watchq run passes PROG's status on).
type progStatus int

func (e progStatus) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// runExitStatus is watchq run's EXIT STATUS section: PROG's.
const runExitStatus = `.SH EXIT STATUS
PROG's exit status; when PROG was killed by a signal, watchq run ends by the
same signal (without a core dump).
.TP
.B 126
PROG was found but could not be executed.
.TP
.B 127
PROG was not found.
.TP
.B 1
watchq run itself failed (seccomp, FUSE or the helper); the message on
standard error says why.
.TP
.B 2
Bad flags or arguments.
`

func newRunCommand() *cobra.Command {
	var syncSocket, daemon string
	var always bool
	cmd := &cobra.Command{
		Use:   "run [flags] [--] PROG [ARGS...]",
		Short: "Run a program written for the kernel's notification pipes on a kernel without them",
		Long: `Run runs PROG, unmodified (static or dynamic, unprivileged), so that it and
everything it starts see Linux's general notification queue on a kernel
built without it: pipe2(O_NOTIFICATION_PIPE), IOC_WATCH_QUEUE_SET_SIZE,
IOC_WATCH_QUEUE_SET_FILTER and keyctl(KEYCTL_WATCH_KEY) work, and the pipes
read, poll and close as the kernel's do. Keys are watched through the best
key backend this machine has (standard error says which, once); device
notifications come from watchqd for programs that ask with the
WATCHQ_IOC_WATCH_DEVICES ioctl (<watchq/watch_devices.h>).

A seccomp filter traps only those calls; every other system call runs at
full speed. PROG runs with no_new_privs: a set-user-ID program it executes
does not gain privileges. On a kernel that has the facility, and under
another watchq run, run executes PROG as it is and does nothing else.

The exit status is PROG's; when PROG is killed by a signal, run ends by the
same signal. run returns once PROG has exited and no process holds one of
its queues any more. docs/run.md describes how it works and what differs
from the kernel.`,
		Args:        positional(cobra.MinimumNArgs(1)),
		Annotations: map[string]string{manExitStatus: runExitStatus},
		RunE: func(cmd *cobra.Command, args []string) error {
			var ws syscall.WaitStatus
			var err error
			if !always && run.Passthrough() {
				err = run.Exec(args, os.Environ())
			} else {
				ws, err = run.Run(cmd.Context(), run.Config{
					Args: args, Stderr: cmd.ErrOrStderr(), SyncSocket: syncSocket, Daemon: daemon,
				})
			}
			var ee *run.ExecError
			if errors.As(err, &ee) {
				cmd.PrintErrln("watchq run: " + ee.Msg)
				return progStatus(ee.Status)
			}
			if err != nil {
				return err
			}
			if ws.Signaled() {
				reraise(ws.Signal())
				return progStatus(128 + int(ws.Signal()))
			}
			return progStatus(ws.ExitStatus())
		},
	}
	cmd.Flags().SetInterspersed(false) // flags after PROG are PROG's
	cmd.Flags().StringVar(&syncSocket, "sync-socket", "", "listen on this Unix socket; a line \"sync\" is answered \"ok\" once every key change made before it has been posted")
	cmd.Flags().StringVar(&daemon, "socket", "", "watchqd's socket, for device watches (default "+client.DefaultSocket+")")
	cmd.Flags().BoolVar(&always, "always", false, "serve the calls even when the kernel has the facility (for comparing the two)")
	return cmd
}
