// SPDX-License-Identifier: MIT
//
// abi: the trapped calls made through the other ABIs an x86-64 kernel
// runs must be trapped or refused, never let through to a kernel that
// would mishandle them. i386 (int $0x80, from this 64-bit program: build
// with -static -no-pie so that its data lies below 4 GiB) is served like
// the native ABI; x32 numbers (__X32_SYSCALL_BIT) are refused with ENOSYS
// exactly when the kernel refuses x32 calls, else served.
//
// Run it in a session keyring of its own (keyctl session -). Output is
// one line per check; the exit status is the number of failures.

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/keyctl.h>
#include <linux/watch_queue.h>

#define X32 0x40000000L
#define NR32_IOCTL 54
#define NR32_KEYCTL 288
#define NR32_PIPE2 331

static int failed, n;

static void check(int ok, const char *what, long r)
{
	n++;
	if (ok)
		printf("ok %d - %s\n", n, what);
	else {
		failed++;
		printf("not ok %d - %s: got %ld\n", n, what, r);
	}
}

// int80 makes an i386 system call; it returns -errno on failure.
static long int80(long nr, long a, long b, long c, long d)
{
	long ret;
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d)
			 : "memory", "r8", "r9", "r10", "r11");
	return ret;
}

static int fds32[2];
static int count32;
static unsigned char buf[256];

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	long ring = syscall(__NR_add_key, "keyring", "abi-ring", NULL, 0, KEY_SPEC_SESSION_KEYRING);
	if (ring < 0) {
		perror("add_key");
		return 100;
	}

	long r = int80(NR32_PIPE2, (long)fds32, O_NOTIFICATION_PIPE, 0, 0);
	check(r == 0 && fds32[0] > 2 && fds32[1] > 2, "i386 pipe2(O_NOTIFICATION_PIPE)", r);
	r = int80(NR32_IOCTL, fds32[0], IOC_WATCH_QUEUE_SET_SIZE, 1, 0);
	check(r == 0, "i386 ioctl(IOC_WATCH_QUEUE_SET_SIZE)", r);
	r = int80(NR32_KEYCTL, KEYCTL_WATCH_KEY, ring, fds32[0], 5);
	check(r == 0, "i386 keyctl(KEYCTL_WATCH_KEY)", r);
	syscall(__NR_add_key, "user", "abi-k", "x", 1, ring);
	r = int80(NR32_IOCTL, fds32[0], FIONREAD, (long)&count32, 0);
	check(r == 0 && count32 == 16, "i386 FIONREAD counts the LINKED record", count32);
	r = read(fds32[0], buf, sizeof buf);
	check(r == 16 && buf[3] == NOTIFY_KEY_LINKED && buf[5] == 5, "the record reads through the native ABI", r);
	long tkr = syscall(__NR_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING, 1);
	r = int80(NR32_KEYCTL, KEYCTL_WATCH_KEY, KEY_SPEC_THREAD_KEYRING, fds32[0], 6);
	check(r == 0, "i386 keyctl watches @t", r);
	r = int80(NR32_KEYCTL, KEYCTL_WATCH_KEY, KEY_SPEC_THREAD_KEYRING, fds32[0], -1);
	r = r == 0 ? read(fds32[0], buf, sizeof buf) : r;
	uint64_t id = 0;
	memcpy(&id, buf + 8, 8);
	check(r == 16 && id == (uint64_t)tkr, "i386 unwatch of @t removes this thread's keyring", (long)id);

	// x32: refused exactly when the kernel refuses x32 calls.
	int x32 = syscall(SYS_getpid | X32) != -1 || errno != ENOSYS;
	int p[2] = {-1, -1};
	errno = 0;
	r = syscall(SYS_pipe2 | X32, p, O_NOTIFICATION_PIPE);
	if (x32)
		check(r == 0 && p[0] > 2, "x32 pipe2(O_NOTIFICATION_PIPE) is served (x32 enabled)", r);
	else
		check(r == -1 && errno == ENOSYS && p[0] == -1, "x32 pipe2(O_NOTIFICATION_PIPE) is ENOSYS, as every x32 call here", errno);
	errno = 0;
	r = syscall(SYS_keyctl | X32, KEYCTL_WATCH_KEY, ring, fds32[0], 7);
	if (x32)
		check(r == 0, "x32 keyctl(KEYCTL_WATCH_KEY) is served (x32 enabled)", r);
	else
		check(r == -1 && errno == ENOSYS, "x32 keyctl(KEYCTL_WATCH_KEY) is ENOSYS", errno);
	errno = 0;
	r = syscall(514 | X32, fds32[0], IOC_WATCH_QUEUE_SET_SIZE, 1);
	if (x32)
		check(r == -1 && errno == EBUSY, "x32 ioctl(IOC_WATCH_QUEUE_SET_SIZE) is served (x32 enabled)", errno);
	else
		check(r == -1 && errno == ENOSYS, "x32 ioctl(IOC_WATCH_QUEUE_SET_SIZE) is ENOSYS", errno);

	printf("%d checks, %d failed\n", n, failed);
	return failed;
}
