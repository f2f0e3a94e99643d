// SPDX-License-Identifier: MIT
//
// devices: watch_devices() under watchq run, through <watchq/watch_devices.h>.
//
//	devices watch    watch the device list with tag 4, print "ready", read
//	                 one record (blocking) and print it, then check the
//	                 ioctl's errors and the unwatch
//	devices denied   print what watch_devices says (watchqd refuses)
//
// Build: gcc -static -I../include devices.c

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/watch_queue.h>
#include <watchq/watch_devices.h>

static int failed;

static void check(int ok, const char *what)
{
	printf("%s - %s\n", ok ? "ok" : "not ok", what);
	failed += !ok;
}

int main(int argc, char **argv)
{
	int p[2];
	unsigned char b[256];

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		return 2;
	if (pipe2(p, O_NOTIFICATION_PIPE) == -1 || ioctl(p[0], IOC_WATCH_QUEUE_SET_SIZE, 32) == -1) {
		perror("queue");
		return 100;
	}
	if (!strcmp(argv[1], "denied")) {
		int r = watch_devices(p[0], 4, 0);
		printf("watch_devices = %d (%s)\n", r, r < 0 ? strerror(errno) : "");
		return 0;
	}
	errno = 0;
	check(watch_devices(p[0], 4, 1) == -1 && errno == EINVAL, "flags must be 0 (EINVAL)");
	errno = 0;
	check(watch_devices(p[0], 256, 0) == -1 && errno == EINVAL, "watch_id 256 is EINVAL");
	errno = 0;
	check(ioctl(p[0], WATCHQ_IOC_WATCH_DEVICES, (void *)8) == -1 && errno == EFAULT, "an unreadable argument is EFAULT");
	errno = 0;
	check(watch_devices(p[0], -1, 0) == -1 && errno == EBADSLT, "removing no watch is EBADSLT");
	check(watch_devices(p[1], 4, 0) == 0, "watch_devices(fd, 4, 0) through the write end");
	errno = 0;
	check(watch_devices(p[0], 5, 0) == -1 && errno == EBUSY, "a second watch is EBUSY");
	printf("ready\n");
	ssize_t l = read(p[0], b, sizeof b);
	struct watch_notification *h = (void *)b;
	printf("record %zd type %u subtype %u len %u tag %u name %.*s\n", l, h->type, h->subtype,
	       h->info & WATCH_INFO_LENGTH, (h->info & WATCH_INFO_ID) >> WATCH_INFO_ID__SHIFT,
	       l > 17 ? (int)(l - 17) : 0, b + 17);
	check(watch_devices(p[0], -1, 0) == 0, "remove the watch");
	l = read(p[0], b, sizeof b);
	check(l == 8 && h->type == WATCH_TYPE_META && h->subtype == WATCH_META_REMOVAL_NOTIFICATION &&
	      ((h->info & WATCH_INFO_ID) >> WATCH_INFO_ID__SHIFT) == 4, "its 8-byte removal record, tag 4");
	printf("%d failed\n", failed);
	return failed;
}
