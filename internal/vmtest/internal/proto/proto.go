// Package proto defines the control protocol between a vmtest guest and the
// host runner, and the constants both sides share.
//
// The channel is a virtio-serial port named PortName (qemu: -device
// virtserialport,name=watchq.ctl); the guest finds it through
// /sys/class/virtio-ports/vport*/name and opens /dev/vportNpM. Messages are
// single JSON lines. The guest writes a Request, the host performs it (QMP,
// files) and answers with a Response carrying the same ID. Only one guest
// process may have the port open at a time (virtio_console returns EBUSY to a
// second opener), which holds because the guest runs test binaries one by one.
package proto

import "encoding/json"

// PortName is the virtio-serial port name of the control channel.
const PortName = "watchq.ctl"

// EnvInVM is set to "1" by the guest /init for every test binary.
const EnvInVM = "WATCHQ_VMTEST"

// ResultMarker starts the console line with which /init reports the overall
// result ("WATCHQ-VMTEST-RESULT: PASS" or "... FAIL <n>") before powering off.
const ResultMarker = "WATCHQ-VMTEST-RESULT:"

// Operations a guest may request.
const (
	OpDeviceAdd     = "device_add"      // Args: QMP device_add arguments (driver, id, bus, props)
	OpDeviceDel     = "device_del"      // Args: DeviceDelArgs; waits for DEVICE_DELETED
	OpUSBStorageAdd = "usb_storage_add" // Args: USBStorageArgs; blockdev-add + device_add usb-storage
	OpQMP           = "qmp"             // Args: QMPArgs; any QMP command, Result is its "return"
	OpArtifact      = "artifact"        // Args: ArtifactArgs; host saves a file in its artifacts dir
)

// Request is one guest → host message.
type Request struct {
	ID   uint64          `json:"id"`
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response is the host's answer to the Request with the same ID.
type Response struct {
	ID     uint64          `json:"id"`
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// DeviceDelArgs are the arguments of OpDeviceDel.
type DeviceDelArgs struct {
	ID string `json:"id"`
}

// USBStorageArgs are the arguments of OpUSBStorageAdd. The host creates a
// sparse raw image of Size bytes (default 16 MiB) and plugs it as a
// usb-storage device with qdev id ID on Bus (default "xhci.0"). OpDeviceDel
// with the same ID unplugs it and removes the block node.
type USBStorageArgs struct {
	ID   string `json:"id"`
	Size int64  `json:"size,omitempty"`
	Bus  string `json:"bus,omitempty"`
}

// QMPArgs are the arguments of OpQMP.
type QMPArgs struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// ArtifactArgs are the arguments of OpArtifact. Name is a relative slash path
// below the runner's -artifacts directory.
type ArtifactArgs struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// ManifestPath is where the runner puts the Manifest in the initramfs.
const ManifestPath = "/watchq/manifest.json"

// Manifest tells the guest /init what to run.
type Manifest struct {
	Tests []Test   `json:"tests"`
	Env   []string `json:"env,omitempty"` // extra KEY=VALUE for every test
	// TimeoutSeconds is the runner's hard timeout. /init gives each test
	// binary -test.timeout = what is left of it minus a margin, so a hung
	// test panics with its goroutine dump before the host kills qemu.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// Test is one test binary in the initramfs.
type Test struct {
	Pkg  string   `json:"pkg"`  // import path, for messages
	Bin  string   `json:"bin"`  // guest path of the go test -c binary
	Dir  string   `json:"dir"`  // working directory (holds the package's testdata)
	Args []string `json:"args"` // -test.* flags and extra arguments
}
