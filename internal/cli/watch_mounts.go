package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/mount"
)

// Default tags of the mount commands: the watch_mount and watch_sb
// patches' own examples (watch_mount(AT_FDCWD, "/", 0, fd, 0x02),
// watch_sb(AT_FDCWD, "/home/dhowells", 0, fd, 0x03)).
const (
	TagMounts = 2
	TagFS     = 3
)

// mountWatch is what a mounts or fs command watches.
type mountWatch struct {
	fs   bool // watch_sb instead of watch_mount
	path string
	tag  record.Tag
	// inProcess is set when --backend was given: the daemon chooses its
	// own backend, so the in-process source is used.
	inProcess bool
}

func newWatchMountsCommand(fs bool) *cobra.Command {
	o := newWatchOptions()
	w := &mountWatch{fs: fs, path: "/", tag: TagMounts}
	use, short, long, example := "mounts [PATH]", "Watch mount topology changes at and below a directory",
		`Watch the mounts at and below directory PATH (default /) with --tag (default
2): watch_mount(2) of the unmerged watch_queue patches. Records: mounts
attached (new_mount), detached (unmount) and moved (move_from, move_to),
mount attributes changed (readonly, setattr). A record reaches the watch
when the mount it is about lies at or below PATH; unmounting the mount PATH
is on ends the watch (REMOVAL). Mount ids are resolved to mount points (on=,
mnt=; mount_point, aux_mount_point in JSON).

Run by a user other than root, the command watches through the watchqd
daemon at --socket (its policy must grant watch=mounts); the daemon looks
PATH up and watches in this process's own mount namespace. As root, with
--backend, or when no daemon answers, an in-process source runs instead:
fanotify mount events (Linux 6.15, root), else /proc/self/mountinfo
change notification and a diff (--backend mountinfo forces it, and is all
a user other than root gets). Either way only mounts of this process's
mount namespace are seen. docs/mounts.md lists what each backend cannot
see.

`, `  watchq watch mounts
  watchq watch mounts /srv --json
  watchq watch mounts --filter mount:topology --backend mountinfo`
	if fs {
		w.tag = TagFS
		use, short, long, example = "fs [PATH]", "Watch the filesystem a path is on: errors and read-only changes",
			`Watch the superblock of the filesystem PATH (default /) is on with --tag
(default 3): watch_sb(2) of the unmerged watch_queue patches. Records: the
filesystem went read-only or read-write (SUPER readonly), and the errors it
reports (SUPER error, with the errno) from fanotify FAN_FS_ERROR (Linux
5.16, root; ext4 and other filesystems that report errors). When no mount
of the filesystem is left the watch ends (REMOVAL).

Run by a user other than root, the command watches through the watchqd
daemon at --socket (its policy must grant watch=fs-errors), in this
process's own mount namespace; as root, with --backend, or when no daemon
answers, in-process (errors then need root).

`, `  watchq watch fs /srv
  watchq watch fs / --filter sb:error --json`
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long + FilterSyntax, Example: example,
		Args: positional(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				w.path = args[0]
			}
			w.inProcess = cmd.Flags().Changed("backend")
			o.mounts = append(o.mounts, *w)
			return o.run(cmd, nil, devicesOff)
		},
	}
	o.addFlags(cmd, false, false)
	f := cmd.Flags()
	f.StringVar(&o.backend, "backend", "auto", "mount backend of the in-process source: auto, fanotify or mountinfo (given: the daemon is not used)")
	f.StringVar(&o.socket, "socket", defaultSocket(), "watchqd daemon socket `path` (used when not root)")
	o.addWaitFlag(cmd)
	f.Var(tagFlag{&w.tag}, "tag", "watch `tag` (0..255)")
	_ = cmd.RegisterFlagCompletionFunc("backend", cobra.FixedCompletions([]string{"auto", "fanotify", "mountinfo"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// tagFlag is a --tag flag of 0..255.
type tagFlag struct{ t *record.Tag }

func (f tagFlag) String() string {
	if f.t == nil {
		return "0"
	}
	return fmt.Sprint(*f.t)
}

func (f tagFlag) Set(s string) error {
	var n uint64
	if _, err := fmt.Sscan(s, &n); err != nil || n > 255 {
		return fmt.Errorf("bad tag %q: want 0..255", s)
	}
	*f.t = record.Tag(n)
	return nil
}

func (tagFlag) Type() string { return "tag" }

// watchMounts places o.mounts on q: through watchqd when not root (unless
// --backend was given), else, or when no daemon answers, with an
// in-process mount source. A daemon that answers and refuses has the
// last word: its refusal is the command's error.
func (o *watchOptions) watchMounts(ctx context.Context, eng *watchq.Engine, q *watchq.Queue, stderr io.Writer) (source, string, error) {
	daemonWhy := ""
	if os.Geteuid() != 0 && !o.mounts[0].inProcess {
		src, desc, err := o.watchMountsDaemon(ctx, eng, q, stderr)
		if err == nil {
			fmt.Fprintf(stderr, "watchq: mounts: watchqd at %s (in-process source not used)\n", o.socket)
			return src, desc, nil
		}
		var absent errDaemonAbsent
		if !errors.As(err, &absent) {
			return nil, "", err
		}
		daemonWhy = fmt.Sprintf("; watchqd at %s: %s", o.socket, dialWhy(o.socket, absent.err))
	}
	b, err := mount.ParseBackend(o.backend)
	if err != nil {
		return nil, "", usageError{fmt.Errorf("--backend: %w", err)}
	}
	src, err := mount.Open(ctx, mount.Config{Engine: eng, Backend: b})
	if err != nil {
		return nil, "", err
	}
	fmt.Fprintf(stderr, "watchq: mounts: in-process (%s)%s\n", mountCapsText(src.Capabilities()), daemonWhy)
	var descs []string
	for _, w := range o.mounts {
		what := "mounts"
		if w.fs {
			what = "fs"
			err = src.WatchSuperblock(q, w.path, w.tag, nil)
			if errors.Is(err, mount.ErrNoFSErrors) {
				fmt.Fprintf(stderr, "watchq: fs: %s: read-only changes only: %v\n", w.path, err)
				err = nil
			}
		} else {
			err = src.WatchMount(q, w.path, w.tag, nil)
		}
		if err != nil {
			src.Close()
			return nil, "", err
		}
		descs = append(descs, fmt.Sprintf("%s %s tag %d", what, w.path, w.tag))
	}
	o.mountPoints = src.MountPoint
	return src, strings.Join(descs, ", "), nil
}

// mountCapsText describes the in-process mount source.
func mountCapsText(c mount.Capabilities) string {
	parts := []string{c.Backend.String() + " backend"}
	if c.Fanotify != nil && c.Backend != mount.Fanotify {
		parts[0] += " (fanotify: " + c.Fanotify.Error() + ")"
	}
	if c.UniqueIDs == nil {
		parts = append(parts, "64-bit mount ids")
	} else {
		parts = append(parts, "32-bit mount ids ("+c.UniqueIDs.Error()+")")
	}
	if c.FSErrors == nil {
		parts = append(parts, "filesystem errors via FAN_FS_ERROR")
	} else {
		parts = append(parts, "filesystem errors unavailable: "+c.FSErrors.Error())
	}
	return strings.Join(parts, "; ")
}
