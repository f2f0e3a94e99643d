package run

// IocWatchDevices is watchq's ioctl for the seed's watch_devices(fd, tag,
// flags), which has no syscall in mainline: _IOW('W', 0x7e, struct
// watchq_watch_devices) on a queue fd under watchq run, with
//
//	struct watchq_watch_devices { __s32 tag; __u32 flags; };
//
// tag is 0..255, or -1 to remove the watch; flags must be 0. The header
// internal/run/include/watchq/watch_devices.h wraps it (watch_devices()). 'W' 0x60 and 0x61
// are <linux/watch_queue.h>'s; 0x7e is outside every range
// Documentation/userspace-api/ioctl/ioctl-number.rst gives 'W'.
const IocWatchDevices = 1<<30 | 8<<16 | 'W'<<8 | 0x7e
