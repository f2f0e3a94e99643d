// SPDX-License-Identifier: MIT
//
// edge: the kernel's notification-pipe edge semantics, checked one by one.
// It must pass natively on a kernel with CONFIG_WATCH_QUEUE and
// CONFIG_KEY_NOTIFICATIONS (the vmtest guest) and under `watchq run` on a
// kernel without them, with the same output. Build: gcc -static -pthread.
//
// Run it in a session keyring of its own that the supervisor shares
// (`keyctl session - edge`): the keyrings it creates are linked into @s,
// where the supervisor's key source can read them. Every check that
// expects a record first asks FIONREAD how many bytes are queued: on the
// kernel the record is there already; under watchq run, FIONREAD first
// lets the key source catch up, so the answer is the kernel's.
//
// Output: one "ok N - what" or "not ok N - what: details" line per check;
// the exit status is the number of failed checks (0: all passed).

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// <linux/watch_queue.h> includes <linux/fcntl.h>, which clashes with
// glibc's <fcntl.h>; declare what is needed from the latter.
#include <linux/keyctl.h>
#include <linux/watch_queue.h>
int fcntl(int, int, ...);
int open(const char *, int, ...);
#define F_GETFD 1
#define F_GETFL 3
#define F_SETFL 4
#define FD_CLOEXEC 1

static int failed, n;

static void check(int ok, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void check(int ok, const char *what, const char *fmt, ...)
{
	n++;
	if (ok) {
		printf("ok %d - %s\n", n, what);
		return;
	}
	failed++;
	printf("not ok %d - %s: ", n, what);
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

// expect checks that a call returned want (>= 0) or failed with errno err.
#define expect(call, want, err, what) do {					\
	errno = 0;								\
	long r_ = (long)(call);							\
	int e_ = errno;								\
	if ((err) == 0)								\
		check(r_ == (want), what, "%s = %ld (%s), want %ld",		\
		      #call, r_, r_ < 0 ? strerror(e_) : "", (long)(want));	\
	else									\
		check(r_ == -1 && e_ == (err), what,				\
		      "%s = %ld (%s), want -1 (%s)", #call, r_,			\
		      r_ < 0 ? strerror(e_) : "", strerror(err));		\
} while (0)

static long kctl(long op, long a, long b, long c)
{
	return syscall(__NR_keyctl, op, a, b, c, 0);
}

static long watch(long key, int fd, long tag)
{
	return kctl(KEYCTL_WATCH_KEY, key, fd, tag);
}

static long add_key(const char *type, const char *desc, const void *p, size_t plen, long ring)
{
	return syscall(__NR_add_key, type, desc, p, plen, ring);
}

static long new_keyring(const char *name)
{
	long k = add_key("keyring", name, NULL, 0, KEY_SPEC_SESSION_KEYRING);
	if (k < 0) {
		perror(name);
		exit(100);
	}
	return k;
}

static int queued(int fd)
{
	int q = -1;
	if (ioctl(fd, FIONREAD, &q) == -1)
		return -1;
	return q;
}

static int notif_pipe(int p[2], int flags, int size)
{
	if (pipe2(p, O_NOTIFICATION_PIPE | flags) == -1) {
		perror("pipe2");
		exit(100);
	}
	if (size && ioctl(p[0], IOC_WATCH_QUEUE_SET_SIZE, size) == -1) {
		perror("IOC_WATCH_QUEUE_SET_SIZE");
		exit(100);
	}
	return 0;
}

struct rec {
	unsigned type, subtype, len, tag;
	uint32_t key, aux; // key records
	uint64_t id;       // removal records
};

static struct rec parse(const unsigned char *b)
{
	const struct watch_notification *h = (const void *)b;
	struct rec r = {h->type, h->subtype, h->info & WATCH_INFO_LENGTH,
			(h->info & WATCH_INFO_ID) >> WATCH_INFO_ID__SHIFT, 0, 0, 0};
	if (r.type == WATCH_TYPE_KEY_NOTIFY && r.len >= sizeof(struct key_notification)) {
		const struct key_notification *k = (const void *)b;
		r.key = k->key_id;
		r.aux = k->aux;
	}
	if (r.type == WATCH_TYPE_META && r.subtype == WATCH_META_REMOVAL_NOTIFICATION &&
	    r.len >= sizeof(struct watch_notification_removal))
		r.id = ((const struct watch_notification_removal *)b)->id;
	return r;
}

// expect_removal reads one record and checks it is the removal of key id
// with tag.
static void expect_removal(int fd, long id, unsigned tag, const char *what)
{
	unsigned char b[128];
	int q = queued(fd);
	ssize_t l = read(fd, b, sizeof b);
	struct rec r = parse(b);
	check(q == 16 && l == 16 && r.type == WATCH_TYPE_META &&
	      r.subtype == WATCH_META_REMOVAL_NOTIFICATION && r.len == 16 &&
	      r.tag == tag && r.id == (uint64_t)id, what,
	      "FIONREAD %d, read %zd: type %u subtype %u len %u tag %u id %llu, want id %ld tag %u",
	      q, l, r.type, r.subtype, r.len, r.tag, (unsigned long long)r.id, id, tag);
}

struct thread_result {
	long tkr;        // the thread's own thread keyring
	long removal_id; // the id its unwatch of @t reported
	ssize_t blocked; // what a blocking read returned
};

static int thread_fd;

static void *thread_keyring(void *arg)
{
	struct thread_result *res = arg;
	unsigned char b[128];
	res->removal_id = -1;
	if (watch(KEY_SPEC_THREAD_KEYRING, thread_fd, 9) == -1)
		return NULL;
	res->tkr = kctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING, 0, 0);
	if (watch(KEY_SPEC_THREAD_KEYRING, thread_fd, -1) == -1)
		return NULL;
	if (queued(thread_fd) == 16 && read(thread_fd, b, sizeof b) == 16)
		res->removal_id = (long)parse(b).id;
	return NULL;
}

static void *blocking_reader(void *arg)
{
	struct thread_result *res = arg;
	unsigned char b[128];
	res->blocked = read(thread_fd, b, sizeof b);
	return NULL;
}

int main(void)
{
	int p[2], q[2], plain[2];
	unsigned char buf[4096];
	struct rec r;
	ssize_t l;

	setvbuf(stdout, NULL, _IOLBF, 0);
	long ring = new_keyring("edge-ring");

	// --- pipe2
	expect(pipe2(p, O_NOTIFICATION_PIPE | O_APPEND), -1, EINVAL, "pipe2 with a flag it does not take is EINVAL");
	expect(pipe2((int *)8, O_NOTIFICATION_PIPE), -1, EFAULT, "pipe2 into unwritable memory is EFAULT");
	expect(pipe2(p, O_NOTIFICATION_PIPE | O_CLOEXEC | O_NONBLOCK), 0, 0, "pipe2(O_NOTIFICATION_PIPE|O_CLOEXEC|O_NONBLOCK)");
	check((fcntl(p[0], F_GETFD) & FD_CLOEXEC) && (fcntl(p[1], F_GETFD) & FD_CLOEXEC), "O_CLOEXEC on both ends", "F_GETFD %d %d", fcntl(p[0], F_GETFD), fcntl(p[1], F_GETFD));
	check((fcntl(p[0], F_GETFL) & O_NONBLOCK) && (fcntl(p[1], F_GETFL) & O_NONBLOCK), "O_NONBLOCK on both ends", "F_GETFL %#x %#x", fcntl(p[0], F_GETFL), fcntl(p[1], F_GETFL));

	// --- read, write, seek before anything is queued
	expect(write(p[1], "x", 1), -1, EXDEV, "write to the write end is EXDEV");
	expect(write(p[0], "x", 1), -1, EBADF, "write to the read end is EBADF");
	expect(read(p[1], buf, sizeof buf), -1, EBADF, "read from the write end is EBADF");
	expect(read(p[0], buf, sizeof buf), -1, EAGAIN, "non-blocking read of an empty queue is EAGAIN");
	expect(lseek(p[0], 0, SEEK_SET), -1, ESPIPE, "lseek is ESPIPE");
	struct pollfd pf = {p[0], POLLIN, 0};
	expect(poll(&pf, 1, 0), 0, 0, "poll of an empty queue times out");

	// --- IOC_WATCH_QUEUE_SET_SIZE, checks in the kernel's order
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_SIZE, 0), -1, EINVAL, "SET_SIZE 0 is EINVAL");
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_SIZE, 513), -1, EINVAL, "SET_SIZE 513 is EINVAL");
	expect(ioctl(p[1], IOC_WATCH_QUEUE_SET_SIZE, 8), 0, 0, "SET_SIZE works on the write end");
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_SIZE, 8), -1, EBUSY, "SET_SIZE twice is EBUSY");
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_SIZE, 0), -1, EBUSY, "a sized queue is EBUSY before the range check");
	if (pipe(plain) == -1)
		return 100;
	expect(ioctl(plain[0], IOC_WATCH_QUEUE_SET_SIZE, 8), -1, ENODEV, "SET_SIZE on a plain pipe is ENODEV");
	int devnull = open("/dev/null", 0);
	expect(ioctl(devnull, IOC_WATCH_QUEUE_SET_SIZE, 8), -1, ENOTTY, "SET_SIZE on /dev/null is ENOTTY");
	expect(ioctl(999, IOC_WATCH_QUEUE_SET_SIZE, 8), -1, EBADF, "SET_SIZE on a closed fd is EBADF");

	// --- IOC_WATCH_QUEUE_SET_FILTER
	struct {
		struct watch_notification_filter f;
		struct watch_notification_type_filter t[17];
	} flt;
	memset(&flt, 0, sizeof flt);
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_FILTER, &flt), -1, EINVAL, "a filter with no entries is EINVAL");
	flt.f.nr_filters = 17;
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_FILTER, &flt), -1, EINVAL, "a filter with 17 entries is EINVAL");
	flt.f.nr_filters = 1;
	flt.f.__reserved = 1;
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_FILTER, &flt), -1, EINVAL, "a filter with __reserved set is EINVAL");
	flt.f.__reserved = 0;
	flt.t[0].type = WATCH_TYPE_KEY_NOTIFY;
	flt.t[0].info_filter = 1 << 16;
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_FILTER, &flt), -1, EINVAL, "info_filter outside info_mask is EINVAL");
	flt.t[0].info_filter = 0;
	flt.t[0].info_mask = WATCH_INFO_LENGTH;
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_FILTER, &flt), -1, EINVAL, "info_mask on the length bits is EINVAL");
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_FILTER, (void *)8), -1, EFAULT, "a filter in unreadable memory is EFAULT");
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_FILTER, NULL), 0, 0, "a NULL filter removes the filter");
	flt.t[0].info_mask = 0;
	flt.t[0].subtype_filter[0] = 1 << NOTIFY_KEY_UNLINKED;
	expect(ioctl(p[1], IOC_WATCH_QUEUE_SET_FILTER, &flt), 0, 0, "SET_FILTER (key UNLINKED only) works on the write end");
	expect(ioctl(plain[0], IOC_WATCH_QUEUE_SET_FILTER, &flt), -1, ENODEV, "SET_FILTER on a plain pipe is ENODEV");

	// --- KEYCTL_WATCH_KEY arguments
	expect(watch(ring, p[0], 256), -1, EINVAL, "watch tag 256 is EINVAL");
	expect(watch(ring, p[0], -2), -1, EINVAL, "watch tag -2 is EINVAL");
	expect(watch(ring, 999, 1), -1, EINVAL, "watch with a bad fd is EINVAL");
	expect(watch(ring, plain[0], 1), -1, EINVAL, "watch with a fd that is not a queue is EINVAL");
	expect(watch(0x7ffffff0, 999, 1), -1, ENOKEY, "the key is looked up before the fd (ENOKEY)");
	expect(watch(ring, p[1], 1), 0, 0, "watch through the write end");
	expect(watch(ring, p[0], 2), -1, EBUSY, "a second watch on the same key and queue is EBUSY");

	// --- the filter keeps LINKED out; UNLINKED passes
	long k1 = add_key("user", "edge-k1", "1", 1, ring);
	expect(queued(p[0]), 0, 0, "a filtered-out record is never queued");
	expect(kctl(KEYCTL_UNLINK, k1, ring, 0), 0, 0, "unlink a key");
	expect(queued(p[0]), 16, 0, "FIONREAD counts the UNLINKED record's 16 bytes");
	pf.revents = 0;
	check(poll(&pf, 1, 0) == 1 && pf.revents == POLLIN, "poll says POLLIN", "revents %#x", pf.revents);
	expect(read(p[0], buf, 8), -1, ENOBUFS, "an 8-byte read of a 16-byte record is ENOBUFS");
	l = read(p[0], buf, sizeof buf);
	r = parse(buf);
	check(l == 16 && r.type == WATCH_TYPE_KEY_NOTIFY && r.subtype == NOTIFY_KEY_UNLINKED &&
	      r.len == 16 && r.tag == 1 && r.key == (uint32_t)ring && r.aux == (uint32_t)k1,
	      "the record is the UNLINKED one, tagged, with key and aux",
	      "read %zd: type %u subtype %u len %u tag %u key %u aux %u", l, r.type, r.subtype, r.len, r.tag, r.key, r.aux);
	expect(read(p[0], buf, sizeof buf), -1, EAGAIN, "the queue is empty again");

	// --- packed reads
	expect(ioctl(p[0], IOC_WATCH_QUEUE_SET_FILTER, NULL), 0, 0, "remove the filter");
	long k2 = add_key("user", "edge-k2", "2", 1, ring);
	long k3 = add_key("user", "edge-k3", "3", 1, ring);
	expect(queued(p[0]), 32, 0, "two LINKED records are queued");
	l = read(p[0], buf, sizeof buf);
	struct rec r1 = parse(buf), r2 = parse(buf + 16);
	check(l == 32 && r1.subtype == NOTIFY_KEY_LINKED && r2.subtype == NOTIFY_KEY_LINKED &&
	      ((r1.aux == (uint32_t)k2 && r2.aux == (uint32_t)k3) || (r1.aux == (uint32_t)k3 && r2.aux == (uint32_t)k2)),
	      "two pending records come back in one read", "read %zd: subtypes %u %u aux %u %u", l, r1.subtype, r2.subtype, r1.aux, r2.aux);

	// --- unwatch
	expect(watch(ring, p[0], -1), 0, 0, "unwatch (tag -1) through the read end");
	expect_removal(p[0], ring, 1, "the unwatch posts a 16-byte removal record with the key and tag");
	expect(watch(ring, p[0], -1), -1, EBADSLT, "unwatching twice is EBADSLT");

	// --- special ids are the caller's
	long tkr = kctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING, 1, 0);
	long pkr = kctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, 1, 0);
	expect(watch(KEY_SPEC_THREAD_KEYRING, p[0], 3), 0, 0, "@t can be watched");
	expect(watch(KEY_SPEC_PROCESS_KEYRING, p[0], 4), 0, 0, "@p can be watched");
	expect(watch(KEY_SPEC_THREAD_KEYRING, p[0], -1), 0, 0, "unwatch @t");
	expect_removal(p[0], tkr, 3, "@t is this thread's thread keyring");
	expect(watch(KEY_SPEC_PROCESS_KEYRING, p[0], -1), 0, 0, "unwatch @p");
	expect_removal(p[0], pkr, 4, "@p is this process's keyring");

	thread_fd = p[0];
	struct thread_result tr = {0};
	pthread_t th;
	pthread_create(&th, NULL, thread_keyring, &tr);
	pthread_join(th, NULL);
	check(tr.tkr > 0 && tr.tkr != tkr && tr.removal_id == tr.tkr, "@t in another thread is that thread's keyring",
	      "thread keyring %ld (main's %ld), removal id %ld", tr.tkr, tkr, tr.removal_id);

	// --- loss: SET_SIZE 4 means 32 notes
	long ring2 = new_keyring("edge-ring2");
	notif_pipe(q, O_NONBLOCK, 4);
	expect(watch(ring2, q[0], 5), 0, 0, "watch a second keyring on a 4-note queue");
	for (int i = 0; i < 40; i++) {
		char d[32];
		snprintf(d, sizeof d, "edge-loss-%d", i);
		add_key("user", d, "x", 1, ring2);
	}
	expect(queued(q[0]), 32 * 16, 0, "40 links fill SET_SIZE 4's 32 notes");
	l = read(q[0], buf, sizeof buf);
	int linked = 0;
	for (int off = 0; off + 16 <= l; off += 16)
		linked += parse(buf + off).subtype == NOTIFY_KEY_LINKED;
	check(l == 32 * 16 && linked == 32, "the read returns the 32 records", "read %zd, %d LINKED", l, linked);
	l = read(q[0], buf, sizeof buf);
	r = parse(buf);
	check(l == 8 && r.type == WATCH_TYPE_META && r.subtype == WATCH_META_LOSS_NOTIFICATION && r.len == 8 && r.tag == 0,
	      "then the next read returns the 8-byte loss record", "read %zd: type %u subtype %u len %u tag %u", l, r.type, r.subtype, r.len, r.tag);
	expect(read(q[0], buf, sizeof buf), -1, EAGAIN, "and then nothing");
	close(q[0]);
	close(q[1]);

	// --- close: records outlive the write end, then POLLHUP and EOF
	long ring3 = new_keyring("edge-ring3");
	notif_pipe(q, 0, 32);
	expect(watch(ring3, q[1], 6), 0, 0, "watch a third keyring");
	add_key("user", "edge-k4", "4", 1, ring3);
	expect(queued(q[0]), 16, 0, "its LINKED record is queued");
	expect(close(q[1]), 0, 0, "close the write end");
	pf.fd = q[0];
	pf.revents = 0;
	check(poll(&pf, 1, 0) == 1 && pf.revents == (POLLIN | POLLHUP), "poll says POLLIN|POLLHUP", "revents %#x", pf.revents);
	expect(read(q[0], buf, sizeof buf), 16, 0, "the queued record is still read");
	pf.revents = 0;
	check(poll(&pf, 1, 0) == 1 && pf.revents == POLLHUP, "then poll says POLLHUP", "revents %#x", pf.revents);
	expect(read(q[0], buf, sizeof buf), 0, 0, "and read says end of file (blocking fd)");
	close(q[0]);

	notif_pipe(q, 0, 0);
	close(q[0]);
	pf.fd = q[1];
	pf.events = POLLOUT;
	pf.revents = 0;
	check(poll(&pf, 1, 0) == 1 && (pf.revents & POLLERR), "the write end polls POLLERR without readers", "revents %#x", pf.revents);
	close(q[1]);

	// --- a blocking read wakes for a record
	notif_pipe(q, 0, 32);
	expect(watch(ring3, q[0], 7), 0, 0, "watch the third keyring again, blocking queue");
	thread_fd = q[0];
	pthread_create(&th, NULL, blocking_reader, &tr);
	add_key("user", "edge-k5", "5", 1, ring3);
	pthread_join(th, NULL);
	check(tr.blocked == 16, "a blocked read returns the record that arrives", "read %zd", tr.blocked);

	// --- fork: the child shares the queue and gets queues of its own
	add_key("user", "edge-k6", "6", 1, ring3);
	expect(queued(q[0]), 16, 0, "a record queued before fork");
	pid_t child = fork();
	if (child == 0) {
		int c[2], bad = 0;
		if (read(q[0], buf, sizeof buf) != 16)
			bad |= 1;
		if (pipe2(c, O_NOTIFICATION_PIPE) == -1 || ioctl(c[0], IOC_WATCH_QUEUE_SET_SIZE, 1) == -1)
			bad |= 2;
		else if (watch(ring3, c[0], 8) == -1 || watch(ring3, c[0], -1) == -1 || queued(c[0]) != 16)
			bad |= 4;
		_exit(bad);
	}
	int st;
	waitpid(child, &st, 0);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a forked child reads the shared queue and makes its own",
	      "child status %#x (1: read, 2: pipe2/SET_SIZE, 4: watch)", st);
	expect(queued(q[0]), 0, 0, "the child consumed the shared record");
	close(q[0]);
	close(q[1]);

	// --- a new session keyring: @s is the one joined
	long ses = kctl(KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0);
	check(ses > 0, "join a new session keyring", "%ld", ses);
	expect(watch(KEY_SPEC_SESSION_KEYRING, p[0], 10), 0, 0, "watch @s after the join");
	expect(watch(KEY_SPEC_SESSION_KEYRING, p[0], -1), 0, 0, "unwatch @s");
	expect_removal(p[0], ses, 10, "@s is the session keyring just joined");

	printf("%d checks, %d failed\n", n, failed);
	return failed;
}
