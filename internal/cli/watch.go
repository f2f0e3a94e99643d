package cli

import (
	"github.com/spf13/cobra"
)

// Default watch tags, as the kernel's sample program uses them: the session
// keyring 1, the user keyring 2, the device list 4 (ver #2 of the sample).
const (
	TagSession = 1
	TagUser    = 2
	TagDevices = 4
)

func newWatchCommand() *cobra.Command {
	o := newWatchOptions()
	fo := &fleetOptions{}
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Watch the session and user keyrings, and devices when available",
		Long: `Watch does what the kernel's sample program does: it watches the session
keyring (tag 1) and the user keyring (tag 2) and, when device notifications
are available, the global device list (tag 4, as ver #2 of the sample did),
all through one queue, and prints every read.

Device notifications come from the watchqd daemon when it runs (--socket),
else from an in-process device source when watchq runs as root. Standard
error says which backends are in use and what is unavailable and why.

` + FilterSyntax + "\n\n" + FormatHelp + "\n\n" + FleetHelp,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fo.from != "" {
				return o.runFleet(cmd, fo)
			}
			return o.run(cmd, defaultKeyArgs(), devicesOptional)
		},
	}
	o.addFlags(cmd, true, true)
	fo.addFlags(cmd)
	cmd.AddCommand(newWatchKeysCommand(), newWatchDevicesCommand(), newWatchMountsCommand(false), newWatchMountsCommand(true))
	return cmd
}
