/* SPDX-License-Identifier: MIT */
/*
 * <watchq/ring.h>: a single-header reader of watchqd's shared-memory ring
 * (create-ring; docs/protocol.md "Shared-memory ring" is the reference,
 * internal/shmring the Go implementation). Records arrive in the layout
 * of <linux/watch_queue.h> (struct watch_notification and what follows),
 * back to back, as one read(2) of a notification pipe returns them.
 *
 *	struct watchq_ring r;
 *	if (watchq_ring_open(&r, data_fd, index_fd, wake_fd, space_fd) < 0) ...
 *	for (;;) {
 *		ssize_t n = watchq_ring_read(&r, buf, sizeof(buf), 1);
 *		if (n == 0) break;	// the daemon closed the queue
 *		if (n < 0) ...		// errno: EAGAIN (non-blocking), ENOBUFS, EPROTO, EINTR
 *		// buf[0..n) holds whole records
 *	}
 *	watchq_ring_close(&r);
 *
 * One thread at a time may read a ring. The four descriptors are those
 * the create-ring reply carries, in its order; open takes its own
 * mappings and leaves the descriptors to the caller, except wake_fd and
 * space_fd, which it uses until close (do not close them before).
 */
#ifndef WATCHQ_RING_H
#define WATCHQ_RING_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Layout of the data memfd (read-only to the consumer). */
#define WATCHQ_RING_MAGIC	0x47525157u	/* "WQRG" */
#define WATCHQ_RING_VERSION	1u
#define WATCHQ_RING_OFF_MAGIC	0	/* u32 */
#define WATCHQ_RING_OFF_VERSION	4	/* u32 */
#define WATCHQ_RING_OFF_DATA	8	/* u32 offset of the data area */
#define WATCHQ_RING_OFF_SIZE	12	/* u32 size of the data area, a power of two */
#define WATCHQ_RING_OFF_HEAD	64	/* u64 bytes published */
#define WATCHQ_RING_OFF_CLOSED	128	/* u32 1 once closed (head final) */
#define WATCHQ_RING_OFF_WAITING	192	/* u32 1 while the daemon waits for space */
/* Layout of the index memfd (the consumer's to write). */
#define WATCHQ_RING_OFF_TAIL	 0	/* u64 bytes consumed */
#define WATCHQ_RING_OFF_SLEEPING 64	/* u32 1 while the consumer blocks */
#define WATCHQ_RING_INDEX_SIZE	4096

struct watchq_ring {
	const unsigned char *mem;	/* the data memfd, PROT_READ */
	size_t mem_len;
	unsigned char *idx;		/* the index memfd, PROT_READ|PROT_WRITE */
	const unsigned char *data;	/* the data area */
	uint64_t size;			/* its size, a power of two */
	uint64_t tail;			/* bytes consumed */
	int wake_fd, space_fd;
};

#define WATCHQ_RING_U32(p, off) ((uint32_t *)(void *)((p) + (off)))
#define WATCHQ_RING_U64(p, off) ((uint64_t *)(void *)((p) + (off)))

/* watchq_ring_open maps the ring and checks its header: 0, or -1 with
 * errno (EPROTO for a header this reader does not know). */
static inline int watchq_ring_open(struct watchq_ring *r, int data_fd, int index_fd, int wake_fd, int space_fd)
{
	struct stat st;
	uint32_t off, size;
	void *m;

	memset(r, 0, sizeof(*r));
	if (fstat(data_fd, &st) < 0)
		return -1;
	if (st.st_size < 4096) {
		errno = EPROTO;
		return -1;
	}
	m = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, data_fd, 0);
	if (m == MAP_FAILED)
		return -1;
	r->mem = m;
	r->mem_len = st.st_size;
	m = mmap(NULL, WATCHQ_RING_INDEX_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, index_fd, 0);
	if (m == MAP_FAILED) {
		munmap((void *)r->mem, r->mem_len);
		return -1;
	}
	r->idx = m;
	off = *WATCHQ_RING_U32(r->mem, WATCHQ_RING_OFF_DATA);
	size = *WATCHQ_RING_U32(r->mem, WATCHQ_RING_OFF_SIZE);
	if (__atomic_load_n(WATCHQ_RING_U32(r->mem, WATCHQ_RING_OFF_MAGIC), __ATOMIC_ACQUIRE) != WATCHQ_RING_MAGIC ||
	    *WATCHQ_RING_U32(r->mem, WATCHQ_RING_OFF_VERSION) != WATCHQ_RING_VERSION ||
	    size == 0 || (size & (size - 1)) != 0 || (uint64_t)off + size > r->mem_len) {
		munmap((void *)r->mem, r->mem_len);
		munmap(r->idx, WATCHQ_RING_INDEX_SIZE);
		errno = EPROTO;
		return -1;
	}
	r->data = r->mem + off;
	r->size = size;
	r->tail = __atomic_load_n(WATCHQ_RING_U64(r->idx, WATCHQ_RING_OFF_TAIL), __ATOMIC_RELAXED);
	r->wake_fd = wake_fd;
	r->space_fd = space_fd;
	return 0;
}

/* watchq_ring_avail returns the bytes published and unread, and sets
 * *closed. closed is loaded before head: once it reads 1, head is final.
 * Sequentially consistent, for the sleep handshake (see sleep). */
static inline uint64_t watchq_ring_avail(const struct watchq_ring *r, int *closed)
{
	*closed = __atomic_load_n(WATCHQ_RING_U32(r->mem, WATCHQ_RING_OFF_CLOSED), __ATOMIC_SEQ_CST) != 0;
	return __atomic_load_n(WATCHQ_RING_U64(r->mem, WATCHQ_RING_OFF_HEAD), __ATOMIC_SEQ_CST) - r->tail;
}

/* watchq_ring_copy copies n bytes from the data area at count pos,
 * wrapping at its end. */
static inline void watchq_ring_copy(const struct watchq_ring *r, unsigned char *dst, uint64_t pos, size_t n)
{
	size_t o = pos & (r->size - 1), first = r->size - o < n ? r->size - o : n;

	memcpy(dst, r->data + o, first);
	memcpy(dst + first, r->data, n - first);
}

/* watchq_ring_try copies the whole records that are published and fit
 * into buf: their length, or 0 with *closed set and nothing published,
 * or -1 (EAGAIN: nothing; ENOBUFS: the next record does not fit; EPROTO:
 * a malformed ring). It returns the space read to the daemon, and writes
 * the space eventfd if the daemon waits for it. */
static inline ssize_t watchq_ring_try(struct watchq_ring *r, void *buf, size_t len, int *closed)
{
	uint64_t avail = watchq_ring_avail(r, closed), one = 1;
	size_t n = 0;

	if (avail > r->size) {
		errno = EPROTO;
		return -1;
	}
	while (n < avail) {
		/* The length: bits 0..6 of info, the header's byte 4. */
		size_t l = r->data[(r->tail + n + 4) & (r->size - 1)] & 0x7f;

		if (l < 8 || l > avail - n) {
			if (n > 0)
				break;
			errno = EPROTO;
			return -1;
		}
		if (l > len - n)
			break;
		watchq_ring_copy(r, (unsigned char *)buf + n, r->tail + n, l);
		n += l;
	}
	if (n > 0) {
		r->tail += n;
		/* Store the tail, then load waiting: seq-cst, the mirror of
		 * the daemon's store of waiting and load of the tail. */
		__atomic_store_n(WATCHQ_RING_U64(r->idx, WATCHQ_RING_OFF_TAIL), r->tail, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(WATCHQ_RING_U32(r->mem, WATCHQ_RING_OFF_WAITING), __ATOMIC_SEQ_CST))
			(void)!write(r->space_fd, &one, sizeof(one));
		return n;
	}
	if (avail > 0) {
		errno = ENOBUFS;
		return -1;
	}
	if (*closed)
		return 0;
	errno = EAGAIN;
	return -1;
}

/* watchq_ring_read is read(2) of a notification pipe over the ring: whole
 * records into buf, 0 once the daemon has closed the queue and every
 * record is read, -1 with errno. With block, it waits for records: it
 * sets the sleeping flag, looks again (the daemon stores head and then
 * loads the flag; the reader stores the flag and then loads head; with
 * sequentially consistent accesses one of them sees the other), and only
 * then blocks on the wake eventfd, which the daemon writes only while the
 * flag is set. */
static inline ssize_t watchq_ring_read(struct watchq_ring *r, void *buf, size_t len, int block)
{
	uint32_t *sleeping = WATCHQ_RING_U32(r->idx, WATCHQ_RING_OFF_SLEEPING);
	int closed;

	for (;;) {
		ssize_t n = watchq_ring_try(r, buf, len, &closed);
		uint64_t v;
		struct pollfd p = { .fd = r->wake_fd, .events = POLLIN };

		if (n >= 0 || errno != EAGAIN || !block)
			return n;
		__atomic_store_n(sleeping, 1, __ATOMIC_SEQ_CST);
		if (watchq_ring_avail(r, &closed) != 0 || closed) {
			__atomic_store_n(sleeping, 0, __ATOMIC_SEQ_CST);
			continue;
		}
		if (poll(&p, 1, -1) < 0) {
			int e = errno;

			__atomic_store_n(sleeping, 0, __ATOMIC_SEQ_CST);
			errno = e;
			return -1;
		}
		(void)!read(r->wake_fd, &v, sizeof(v));	/* drain; the fd may be non-blocking */
		__atomic_store_n(sleeping, 0, __ATOMIC_SEQ_CST);
	}
}

/* watchq_ring_close unmaps the ring (the descriptors stay the caller's). */
static inline void watchq_ring_close(struct watchq_ring *r)
{
	munmap((void *)r->mem, r->mem_len);
	munmap(r->idx, WATCHQ_RING_INDEX_SIZE);
	memset(r, 0, sizeof(*r));
}

#endif /* WATCHQ_RING_H */
