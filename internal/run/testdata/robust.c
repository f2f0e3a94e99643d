// SPDX-License-Identifier: MIT
//
// robust: what watchq run's robustness tests make a supervised program do.
//
//	robust block         make a queue, print "ready PID", block in read();
//	                     then report how the read and a new pipe2 ended
//	robust exit N        make N watched queues and exit with them open
//	robust many N        N rounds of pipe2, SET_SIZE, SET_FILTER, FIONREAD
//	                     (on a queue and on a plain pipe), watch, unwatch,
//	                     close; no fd may be left over
//	robust sendfd        make a watched queue with one record queued and
//	                     send its read end over fd 3 (a Unix socket); wait
//	                     for the peer to say it is done
//	robust passfd        pass a queue between two processes of its own
//	                     over a socketpair; the receiver uses it
//	robust orphan        a grandchild that outlives this process (and its
//	                     parent) keeps its queue and watches keys as an
//	                     orphan; this process exits first
//	robust traced        a child traced by this process (PTRACE_TRACEME)
//	                     watches @s: watchq run cannot enter it to resolve
//	                     the id and must refuse (EPERM), not guess
//
// Run it in a session keyring of its own (keyctl session -). It prints
// "ok" lines and "FAIL: ..." lines; the exit status is 0 only if all is
// well.

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/keyctl.h>
#include <linux/watch_queue.h>

static long kctl(long op, long a, long b, long c)
{
	return syscall(__NR_keyctl, op, a, b, c, 0);
}

static long ring(const char *name)
{
	long k = syscall(__NR_add_key, "keyring", name, NULL, 0, KEY_SPEC_SESSION_KEYRING);
	if (k < 0) {
		perror("add_key keyring");
		exit(100);
	}
	return k;
}

static void die(const char *what)
{
	printf("FAIL: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; // the directory's own fd
}

static void queue(int p[2], int size)
{
	if (pipe2(p, O_NOTIFICATION_PIPE) == -1)
		die("pipe2");
	if (size && ioctl(p[0], IOC_WATCH_QUEUE_SET_SIZE, size) == -1)
		die("SET_SIZE");
}

static int queued(int fd)
{
	int q = -1;
	if (ioctl(fd, FIONREAD, &q) == -1)
		die("FIONREAD");
	return q;
}

static int block(void)
{
	int p[2];
	char b[256];
	queue(p, 1);
	printf("ready %d\n", getpid());
	ssize_t r = read(p[0], b, sizeof b);
	printf("read = %zd (%s)\n", r, r < 0 ? strerror(errno) : "");
	int q[2];
	r = pipe2(q, O_NOTIFICATION_PIPE);
	printf("pipe2 = %zd (%s)\n", r, r < 0 ? strerror(errno) : "");
	return 0;
}

static int exit_open(int n)
{
	long k = ring("robust-exit");
	for (int i = 0; i < n; i++) {
		int p[2];
		queue(p, 1);
		if (kctl(KEYCTL_WATCH_KEY, k, p[0], i & 0xff) == -1)
			die("watch");
	}
	printf("ok %d queues open\n", n);
	return 0; // exit with them open
}

static int many(int n)
{
	long k = ring("robust-many");
	int plain[2];
	if (pipe(plain) == -1)
		die("pipe");
	int before = count_fds();
	struct {
		struct watch_notification_filter f;
		struct watch_notification_type_filter t[1];
	} flt = {{.nr_filters = 1}, {{.type = WATCH_TYPE_KEY_NOTIFY, .subtype_filter = {~0u}}}};
	for (int i = 0; i < n; i++) {
		int p[2];
		queue(p, 1 + i % 512);
		if (ioctl(p[1], IOC_WATCH_QUEUE_SET_FILTER, &flt) == -1)
			die("SET_FILTER");
		if (queued(p[0]) != 0 || queued(plain[0]) != 0)
			die("FIONREAD not 0");
		if (kctl(KEYCTL_WATCH_KEY, k, p[0], 1) == -1)
			die("watch");
		if (kctl(KEYCTL_WATCH_KEY, k, p[1], -1) == -1)
			die("unwatch");
		if (queued(p[0]) != 16)
			die("no removal record");
		close(p[0]);
		close(p[1]);
	}
	int after = count_fds();
	if (after != before) {
		printf("FAIL: %d fds before, %d after\n", before, after);
		return 1;
	}
	printf("ok %d rounds, %d trapped calls, no fd left over\n", n, n * 8);
	return 0;
}

static void sendfd(int sock, int fd)
{
	char c = 'q';
	struct iovec iov = {&c, 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof fd);
	if (sendmsg(sock, &m, 0) != 1)
		die("sendmsg");
}

static int recvfd(int sock)
{
	char c;
	struct iovec iov = {&c, 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
	if (recvmsg(sock, &m, 0) != 1)
		die("recvmsg");
	int fd;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
	return fd;
}

static int send_out(void)
{
	long k = ring("robust-send");
	int p[2];
	queue(p, 4);
	if (kctl(KEYCTL_WATCH_KEY, k, p[0], 3) == -1)
		die("watch");
	syscall(__NR_add_key, "user", "robust-send-k", "x", 1, k);
	if (queued(p[0]) != 16)
		die("record not queued");
	sendfd(3, p[0]);
	close(p[0]);
	char b[16];
	// The peer says when it is done (and keeps the pipe's write end
	// meaningful: ours stays open until then).
	if (read(3, b, sizeof b) <= 0)
		die("read from peer");
	printf("ok sent\n");
	return 0;
}

static int pass_fd(void)
{
	long k = ring("robust-pass");
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		die("socketpair");
	pid_t c = fork();
	if (c == 0) {
		// The receiver: a process of PROG's tree using a queue it did
		// not make, by an fd number it did not choose.
		int fd = recvfd(sv[1]);
		char b[64];
		int bad = 0;
		errno = 0;
		if (ioctl(fd, IOC_WATCH_QUEUE_SET_SIZE, 4) != -1 || errno != EBUSY)
			bad |= 1;
		if (kctl(KEYCTL_WATCH_KEY, k, fd, 9) == -1)
			bad |= 2;
		syscall(__NR_add_key, "user", "robust-pass-k", "x", 1, k);
		if (queued(fd) != 16 || read(fd, b, sizeof b) != 16 || b[5] != 9)
			bad |= 4;
		_exit(bad);
	}
	int p[2];
	queue(p, 4);
	sendfd(sv[0], p[0]);
	int st;
	waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		printf("FAIL: receiver status %#x (1: SET_SIZE not EBUSY, 2: watch, 4: record)\n", st);
		return 1;
	}
	printf("ok passed between two processes\n");
	return 0;
}

static int orphan(void)
{
	int ready[2];
	if (pipe(ready) == -1)
		die("pipe");
	pid_t mid = fork();
	if (mid == 0) {
		pid_t was = getpid();
		if (fork() != 0)
			_exit(0); // the grandchild is orphaned at once
		int p[2];
		queue(p, 4);
		close(ready[0]);
		write(ready[1], "q", 1); // PROG may go: the queue keeps watchq run
		close(ready[1]);
		while (getppid() == was)
			usleep(1000);
		long r = kctl(KEYCTL_WATCH_KEY, KEY_SPEC_SESSION_KEYRING, p[0], 2);
		syscall(__NR_add_key, "user", "robust-orphan", "x", 1, KEY_SPEC_SESSION_KEYRING);
		int q = queued(p[0]);
		printf("%s: watch @s %ld, FIONREAD %d\n", r == 0 && q == 16 ? "orphan ok" : "FAIL: orphan", r, q);
		_exit(0);
	}
	close(ready[1]);
	char c;
	if (read(ready[0], &c, 1) != 1)
		die("read ready");
	waitpid(mid, NULL, 0);
	return 0;
}

static int traced(void)
{
	pid_t c = fork();
	if (c == 0) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		raise(SIGSTOP);
		int p[2];
		queue(p, 1);
		errno = 0;
		long r = kctl(KEYCTL_WATCH_KEY, KEY_SPEC_SESSION_KEYRING, p[0], 1);
		printf("traced child: watch @s = %ld (%s)\n", r, r < 0 ? strerror(errno) : "");
		_exit(r == -1 && errno == EPERM ? 0 : 1);
	}
	int st;
	waitpid(c, &st, 0); // the SIGSTOP
	ptrace(PTRACE_CONT, c, 0, 0);
	waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		printf("FAIL: traced child status %#x\n", st);
		return 1;
	}
	printf("ok refused\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		return 2;
	if (!strcmp(argv[1], "block"))
		return block();
	if (!strcmp(argv[1], "exit") && argc > 2)
		return exit_open(atoi(argv[2]));
	if (!strcmp(argv[1], "many") && argc > 2)
		return many(atoi(argv[2]));
	if (!strcmp(argv[1], "sendfd"))
		return send_out();
	if (!strcmp(argv[1], "passfd"))
		return pass_fd();
	if (!strcmp(argv[1], "traced"))
		return traced();
	if (!strcmp(argv[1], "orphan"))
		return orphan();
	return 2;
}
