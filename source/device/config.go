package device

import "github.com/watchq/watchq"

// Config configures Open.
type Config struct {
	// Engine owns the device watch list; required.
	Engine *watchq.Engine
	// ReadBuffer is the uevent socket's receive buffer in bytes: 0 means
	// uevent.DefaultReadBuffer (128 MiB, with SO_RCVBUFFORCE), negative
	// leaves the kernel default.
	ReadBuffer int
	// NoBlockErrors disables the block I/O error tracer.
	NoBlockErrors bool
	// NoUSBReset disables the USB reset tracer.
	NoUSBReset bool
	// RingSize is the block error ring buffer size; 0 means
	// blockerr.DefaultRingSize.
	RingSize int
	// NetNS, if non-zero, opens the uevent socket in that network namespace
	// (tests use a private one to inject spoofed datagrams).
	NetNS int
	// SysfsRoot is where sysfs is mounted, for block device sizes; "" means
	// /sys.
	SysfsRoot string
}

// Capabilities says which parts of the source work on this machine, and
// why not. A nil error means the part runs.
type Capabilities struct {
	Uevents         error  // USB add/remove and block lifecycle records
	BlockErrors     error  // block I/O error records
	BlockTracepoint string // "block/block_rq_error" or the fallback in use
	USBReset        error  // USB reset records (fexit on usb_reset_device)
}

// Stats counts what the source saw. Every field only grows.
type Stats struct {
	Received    uint64 // kernel uevents received
	Posted      uint64 // records posted to the watch list
	Ignored     uint64 // uevents that map to no record
	Malformed   uint64 // kernel datagrams that did not parse
	Spoofed     uint64 // datagrams from a sender other than the kernel, dropped
	Truncated   uint64 // datagrams longer than uevent.MaxSize, dropped
	Overruns    uint64 // ENOBUFS reports from the uevent socket
	UeventsLost uint64 // uevents the kernel dropped on a full socket
	ReadErrors  uint64 // other receive errors
	BlockErrors uint64 // block I/O errors received from the tracer
	BPFDrops    uint64 // block errors and resets dropped on a full ring buffer
	USBResets   uint64 // USB resets received from the tracer
}

// Object is the watched object the device watch list belongs to: the
// global device list, id 0, owned by root, mode 0 (the policy decides;
// security_watch_devices).
var Object = watchq.Object{Kind: watchq.KindDevices}
