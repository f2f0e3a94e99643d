// Package device is watchq's device notification source: the global device
// watch list of David Howells' ver #2 patch set ("Add a general, global
// device notification watch list"), built from what stock kernels expose.
//
//   - USB devices appearing and going, and block disks and partitions
//     appearing, going and changing, come from kernel uevents
//     (NETLINK_KOBJECT_UEVENT, package uevent).
//   - Block I/O errors come from the block:block_rq_error tracepoint through
//     an eBPF program (package blockerr).
//   - USB resets come from an fexit program on usb_reset_device (package
//     usbreset) where the kernel allows one; Capabilities says when not.
//
// A [Source] owns one watch list; [Source.Watch] is the ver #2
// watch_devices(fd, watch_id, 0) system call. Records are posted with the
// system's credentials (init_cred) and object id 0, as
// post_device_notification does. docs/records.md describes every record.
package device
