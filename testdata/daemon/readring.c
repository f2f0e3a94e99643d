/* readring: read a watchqd ring queue through <watchq/ring.h>, as any C
 * consumer would, and check what arrives: publisher records carrying a
 * 64-bit sequence number after the header, in order, then the removal
 * record, then end of file. The create-ring reply's descriptors are fds 3
 * (data), 4 (index), 5 (wake) and 6 (space). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <linux/watch_queue.h>
#include <watchq/ring.h>

int main(void)
{
	struct watchq_ring r;
	unsigned char buf[40]; /* two 16-byte records at most: reads pack, and wrap */
	uint64_t next = 0, reads = 0, removals = 0, other = 0;

	if (watchq_ring_open(&r, 3, 4, 5, 6) < 0) {
		perror("watchq_ring_open");
		return 1;
	}
	for (;;) {
		ssize_t n = watchq_ring_read(&r, buf, sizeof(buf), 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("watchq_ring_read");
			return 1;
		}
		if (n == 0)
			break;
		reads++;
		for (ssize_t p = 0; p < n;) {
			struct watch_notification wn;
			size_t len;

			memcpy(&wn, buf + p, sizeof(wn));
			len = wn.info & WATCH_INFO_LENGTH;
			if (len < sizeof(wn) || len > (size_t)(n - p)) {
				fprintf(stderr, "bad record length %zu at %zd of %zd\n", len, p, n);
				return 1;
			}
			if (wn.type == WATCH_TYPE_META && wn.subtype == WATCH_META_REMOVAL_NOTIFICATION) {
				removals++;
			} else if (wn.type == WATCH_TYPE_META && wn.subtype == WATCH_META_LOSS_NOTIFICATION) {
				fprintf(stderr, "loss of %u records after %llu\n", wn.info >> 16, (unsigned long long)next);
				return 1;
			} else if (wn.type == 0x800020 && len == 16) {
				uint64_t seq;
				memcpy(&seq, buf + p + 8, 8);
				if (seq != next) {
					fprintf(stderr, "record %llu, want %llu\n", (unsigned long long)seq, (unsigned long long)next);
					return 1;
				}
				next++;
			} else {
				other++;
			}
			p += len;
		}
	}
	watchq_ring_close(&r);
	printf("records=%llu removals=%llu other=%llu packed=%d\n", (unsigned long long)next,
	       (unsigned long long)removals, (unsigned long long)other, reads < next);
	printf("-- END --\n");
	return 0;
}
