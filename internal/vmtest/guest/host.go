package guest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/watchq/watchq/internal/vmtest/internal/proto"
)

// DeviceAdd asks the host to hot-plug a qemu device (QMP device_add) with
// the given driver and qdev id. props are "name=value" qdev properties;
// values that parse as integers or booleans are sent as such, everything else
// as strings (use DeviceAddArgs when that guess is wrong). USB drivers
// ("usb-…") default to bus=xhci.0, the runner's qemu-xhci controller.
//
//	guest.DeviceAdd(ctx, "usb-kbd", "kbd1")
//	guest.DeviceAdd(ctx, "usb-tablet", "tab1", "port=2")
func DeviceAdd(ctx context.Context, driver, id string, props ...string) error {
	args := map[string]any{"driver": driver, "id": id}
	for _, p := range props {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("vmtest guest: device_add %s: property %q is not name=value", id, p)
		}
		if n, err := strconv.ParseInt(v, 0, 64); err == nil {
			args[k] = n
		} else if b, err := strconv.ParseBool(v); err == nil && (v == "true" || v == "false") {
			args[k] = b
		} else {
			args[k] = v
		}
	}
	return DeviceAddArgs(ctx, args)
}

// DeviceAddArgs is DeviceAdd with the exact QMP device_add arguments
// (must include "driver"; "id" is needed to remove the device later).
func DeviceAddArgs(ctx context.Context, args map[string]any) error {
	if d, _ := args["driver"].(string); strings.HasPrefix(d, "usb-") {
		if _, ok := args["bus"]; !ok {
			args["bus"] = "xhci.0"
		}
	}
	return ctl.call(ctx, proto.OpDeviceAdd, args, nil)
}

// DeviceDel asks the host to unplug the device with qdev id (QMP device_del)
// and returns once qemu reports DEVICE_DELETED. For a device added with
// AddUSBStorage the host also removes its block node and image.
func DeviceDel(ctx context.Context, id string) error {
	return ctl.call(ctx, proto.OpDeviceDel, proto.DeviceDelArgs{ID: id}, nil)
}

// AddUSBStorage asks the host to plug a USB mass-storage device with qdev id
// backed by a fresh sparse raw image of size bytes (0 means 16 MiB). In the
// guest it appears as a SCSI disk (sdX) after usb-storage's delay_use (1 s).
func AddUSBStorage(ctx context.Context, id string, size int64) error {
	return ctl.call(ctx, proto.OpUSBStorageAdd, proto.USBStorageArgs{ID: id, Size: size}, nil)
}

// QMP runs any QMP command on the host's qemu and returns its "return" value.
// arguments may be nil.
func QMP(ctx context.Context, execute string, arguments any) (json.RawMessage, error) {
	a := proto.QMPArgs{Execute: execute}
	if arguments != nil {
		b, err := json.Marshal(arguments)
		if err != nil {
			return nil, fmt.Errorf("vmtest guest: qmp %s: %w", execute, err)
		}
		a.Arguments = b
	}
	var ret json.RawMessage
	err := ctl.call(ctx, proto.OpQMP, a, &ret)
	return ret, err
}

// SaveArtifact hands data to the host, which writes it to name (a relative
// slash path) below the runner's -artifacts directory, or discards it when
// the runner has none. Use it to capture fixtures from the real kernel.
func SaveArtifact(ctx context.Context, name string, data []byte) error {
	return ctl.call(ctx, proto.OpArtifact, proto.ArtifactArgs{Name: name, Data: data}, nil)
}
