package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/watchq/watchq/record"
)

func newWatchDevicesCommand() *cobra.Command {
	o := newWatchOptions()
	cmd := &cobra.Command{
		Use:   "devices [TAG]",
		Short: "Watch block and USB device notifications",
		Long: `Watch the global device list (ver #2's watch_devices) with TAG (default 4):
block disks and partitions appearing, going and changing, block I/O errors,
USB devices appearing, going and being reset.

Records come from the watchqd daemon when it runs at --socket; otherwise
from an in-process device source: as root everything, as another user the
device lifecycle from uevents only (block I/O errors and USB resets need
eBPF tracers: watchqd or root). Standard error says which parts are in use
and why others are not.

When watchqd goes away, the device watch ends with its removal record and
the command exits with status 1; with --wait it reconnects with backoff,
watches again with the same tag and filter, and marks the gap with a loss
record.

` + FilterSyntax + "\n\n" + FormatHelp,
		Example: `  watchq watch devices
  watchq watch devices --filter block:error --json
  watchq watch devices --socket /run/watchqd/watchqd.sock --filter usb`,
		Args: positional(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			tag := TagDevices
			if len(args) == 1 {
				n, err := strconv.ParseUint(args[0], 0, 8)
				if err != nil {
					return usageError{fmt.Errorf("bad tag %q: want 0..255", args[0])}
				}
				tag = int(n)
			}
			o.deviceTag = record.Tag(tag)
			return o.run(cmd, nil, devicesRequired)
		},
	}
	o.addFlags(cmd, false, true)
	return cmd
}
