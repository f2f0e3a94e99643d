package device

import (
	"strconv"

	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device/uevent"
)

// SizeFunc returns the size in 512-byte sectors of the block device at
// devpath (sysfs "size"), or 0 when it cannot be read.
type SizeFunc func(devpath []byte) uint64

// MapUevent turns a kernel uevent into a device record, appended to dst,
// and reports whether the event maps to one:
//
//   - SUBSYSTEM=usb DEVTYPE=usb_device, add/remove: a USB record, subtype
//     USBDeviceAdd/USBDeviceRemove, named by the kernel device name
//     ("3-7.7", "usb3"), error and reserved 0 (usbdev_notify in the ver #2
//     drivers/usb/core/devio.c);
//   - SUBSYSTEM=block DEVTYPE=disk|partition, add/remove/change: a block
//     lifecycle record (subtypes 0x80..0x84) with the kernel-internal dev
//     from MAJOR/MINOR, the device name, BlockFlagPartition for partitions,
//     and Sector = the size from size(devpath) for add, change and resize.
//     A change carrying DISK_MEDIA_CHANGE=1 (disk_check_media_change) is
//     BlockMediaChange; one carrying RESIZE=1 (set_capacity_and_notify) is
//     BlockResize. Synthetic change events (SYNTH_UUID, written to
//     /sys/.../uevent) report no real change and do not read the size.
//
// Everything else (other subsystems, USB interfaces, bind/unbind/move/
// online/offline) maps to nothing. size may be nil.
func MapUevent(e *uevent.Event, dst []byte, size SizeFunc) ([]byte, bool) {
	subsys := e.Get("SUBSYSTEM")
	switch string(subsys) {
	case "usb":
		if !e.Is("DEVTYPE", "usb_device") {
			return dst, false
		}
		var st uint8
		switch e.Action {
		case uevent.ActionAdd:
			st = record.USBDeviceAdd
		case uevent.ActionRemove:
			st = record.USBDeviceRemove
		default:
			return dst, false
		}
		n := record.USBNotification{Subtype: st, Name: unsafeString(e.Name())}
		rec, _ := n.AppendBinary(dst)
		return rec, true
	case "block":
		var flags uint16
		switch string(e.Get("DEVTYPE")) {
		case "disk":
		case "partition":
			flags = uint16(record.BlockFlagPartition >> record.InfoTypeInfoShift)
		default:
			return dst, false
		}
		major, ok1 := parseUint32(e.Get("MAJOR"))
		minor, ok2 := parseUint32(e.Get("MINOR"))
		if !ok1 || !ok2 {
			return dst, false
		}
		var st uint8
		readSize := true
		switch e.Action {
		case uevent.ActionAdd:
			st = record.BlockAdd
		case uevent.ActionRemove:
			st, readSize = record.BlockRemove, false
		case uevent.ActionChange:
			switch {
			case e.Is("DISK_MEDIA_CHANGE", "1"):
				st = record.BlockMediaChange
			case e.Is("RESIZE", "1"):
				st = record.BlockResize
			default:
				st = record.BlockChange
				readSize = e.Get("SYNTH_UUID") == nil
			}
		default:
			return dst, false
		}
		n := record.BlockNotification{
			Subtype: st, TypeInfo: flags,
			Dev:  record.KernelDev(major, minor),
			Name: unsafeString(e.Name()),
		}
		if readSize && size != nil {
			n.Sector = size(e.DevPath)
		}
		rec, _ := n.AppendBinary(dst)
		return rec, true
	}
	return dst, false
}

func parseUint32(b []byte) (uint32, bool) {
	if len(b) == 0 {
		return 0, false
	}
	v, err := strconv.ParseUint(unsafeString(b), 10, 32)
	return uint32(v), err == nil
}

// DevicesID is the object id of the one global device watch list: device
// removal records carry no id (the 8-byte form).
const DevicesID record.ObjectID = 0
