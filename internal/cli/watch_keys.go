package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys"
)

// keyArg is one key to watch: the id as given, the parsed id and the tag.
type keyArg struct {
	spec string
	id   int32
	tag  record.Tag
}

// defaultKeyArgs are the sample's watches: @s with tag 1, @u with tag 2.
func defaultKeyArgs() []keyArg {
	return []keyArg{{"@s", keys.SpecSession, TagSession}, {"@u", keys.SpecUser, TagUser}}
}

// parseKeyArgs parses KEY[=TAG] arguments; a key without a tag gets its
// position (1, 2, …).
func parseKeyArgs(args []string) ([]keyArg, error) {
	if len(args) == 0 {
		return defaultKeyArgs(), nil
	}
	out := make([]keyArg, 0, len(args))
	for i, a := range args {
		spec, tagText, hasTag := strings.Cut(a, "=")
		id, err := keys.ParseID(spec)
		if err != nil {
			return nil, usageError{fmt.Errorf("key %q: %w", a, err)}
		}
		tag := i + 1
		if hasTag {
			n, err := strconv.ParseUint(tagText, 0, 8)
			if err != nil {
				return nil, usageError{fmt.Errorf("key %q: bad tag %q: want 0..255", a, tagText)}
			}
			tag = int(n)
		} else if tag > 255 {
			return nil, usageError{fmt.Errorf("key %q: too many keys for positional tags; give KEY=TAG", a)}
		}
		out = append(out, keyArg{spec, id, record.Tag(tag)})
	}
	return out, nil
}

func newWatchKeysCommand() *cobra.Command {
	o := newWatchOptions()
	cmd := &cobra.Command{
		Use:   "keys [KEY[=TAG]...]",
		Short: "Watch keys and keyrings (in-process)",
		Long: `Watch keys and keyrings through an in-process key source. A KEY is a serial
(decimal or 0x hex) or a special id as keyctl(1) spells it: @t, @p, @s, @u,
@us, @a. Each key is watched with TAG, or with its position (1, 2, ...) when
none is given. Without keys: the session keyring with tag 1 and the user
keyring with tag 2, as the kernel's sample does.

The kernel backend (KEYCTL_WATCH_KEY on a notification pipe) needs a kernel
with CONFIG_WATCH_QUEUE and CONFIG_KEY_NOTIFICATIONS. Without it, the traced
backend (root: BPF on the keyctl, add_key and request_key system calls)
posts the record the kernel would for each change any process makes, and
polls every --interval only for what system calls do not show (garbage
collection, the kernel's own changes); the poll backend diffs /proc/keys and
KEYCTL_READ every --interval. --backend=auto picks kernel, else traced
(in-process for root; for other users through watchqd at --socket, which
checks View in the user's context and refuses keys viewable only as their
possessor), else poll. The first line on stderr says which backend is in
use and what it cannot see.

Like keyctl watch, the command ends (status 0) when its last watch is
removed: the watched key was unlinked from everything and collected, or
invalidated; the removal record is printed first.

` + FilterSyntax + "\n\n" + FormatHelp,
		Example: `  watchq watch keys                       # @s tag 1, @u tag 2
  watchq watch keys @u=7 0x2ffc2e5d=8 --backend=poll --interval=100ms
  watchq watch keys --filter key:linked,unlinked --json`,
		ValidArgsFunction: completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			ks, err := parseKeyArgs(args)
			if err != nil {
				return err
			}
			o.exitOnLastKey = true
			return o.run(cmd, ks, devicesOff)
		},
	}
	o.addFlags(cmd, true, false)
	cmd.Flags().StringVar(&o.socket, "socket", defaultSocket(), "watchqd daemon socket `path`, for the traced backend as a user other than root")
	o.addWaitFlag(cmd)
	return cmd
}

// completeKeys offers the special key ids keyctl(1) knows and the serials
// of the keys this user can see in /proc/keys, with their descriptions.
func completeKeys(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	out := []string{"@s\tsession keyring", "@u\tuser keyring", "@us\tuser session keyring",
		"@p\tprocess keyring", "@t\tthread keyring", "@a\tassumed request_key authorisation key"}
	if b, err := os.ReadFile("/proc/keys"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			// "2ffc2e5d I--Q---     1 perm 3f030000  1000  1000 keyring   _ses: 1"
			f := strings.Fields(line)
			if len(f) < 9 {
				continue
			}
			serial, err := strconv.ParseUint(f[0], 16, 32)
			if err != nil {
				continue
			}
			out = append(out, fmt.Sprintf("%d\t%s %s", serial, f[7], strings.Join(f[8:], " ")))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
