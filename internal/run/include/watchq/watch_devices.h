/* SPDX-License-Identifier: MIT */
/*
 * watch_devices(2) for programs run under `watchq run`.
 *
 * The seed's watch_devices(fd, watch_id, flags) has no system call in
 * mainline; under watchq run it is this ioctl on a notification pipe from
 * pipe2(O_NOTIFICATION_PIPE): the queue then receives watchqd's device
 * records (block and USB, the layouts of ver #2's block_notification and
 * usb_notification) stamped with watch_id, filtered by the queue's
 * IOC_WATCH_QUEUE_SET_FILTER and allowed by watchqd's policy for the
 * program's user. watch_id -1 removes the watch (an 8-byte removal record
 * follows). See docs/run.md.
 *
 * Errors: EINVAL (flags, watch_id out of -1..255, fd not a queue), EFAULT,
 * EBUSY (watching already), EBADSLT (no watch to remove), EACCES (watchqd's
 * policy grants no device records), EOPNOTSUPP (watchqd is not running),
 * EPERM (the program's credentials differ from watchq run's), ENOTTY (not
 * under watchq run: a kernel pipe knows no such ioctl).
 */
#ifndef WATCHQ_WATCH_DEVICES_H
#define WATCHQ_WATCH_DEVICES_H

#include <sys/ioctl.h>
#include <linux/types.h>

struct watchq_watch_devices {
	__s32 watch_id; /* 0..255, or -1 to remove the watch */
	__u32 flags;    /* must be 0 */
};

#define WATCHQ_IOC_WATCH_DEVICES _IOW('W', 0x7e, struct watchq_watch_devices)

static inline int watch_devices(int fd, int watch_id, unsigned int flags)
{
	struct watchq_watch_devices a = { watch_id, flags };

	return ioctl(fd, WATCHQ_IOC_WATCH_DEVICES, &a);
}

#endif /* WATCHQ_WATCH_DEVICES_H */
