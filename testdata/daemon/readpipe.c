/* readpipe: read a watchqd queue pipe with plain read(2), as a consumer
 * written for the kernel's notification pipes does, and decode the records
 * with <linux/watch_queue.h>. The fd is 3. Modelled on
 * samples/watch_queue/watch_test.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/watch_queue.h>

int main(void)
{
	unsigned char buf[433]; /* the sample's odd size */

	for (;;) {
		ssize_t n = read(3, buf, sizeof(buf));
		if (n < 0) {
			perror("read");
			return 1;
		}
		if (n == 0) {
			printf("-- END --\n");
			return 0;
		}
		printf("read() = %zd\n", n);
		for (ssize_t p = 0; p < n;) {
			struct watch_notification wn;
			size_t largest = n - p > 128 ? 128 : n - p, len;
			if (largest < sizeof(wn)) {
				fprintf(stderr, "Short message header: %zu\n", largest);
				return 1;
			}
			memcpy(&wn, buf + p, sizeof(wn));
			len = wn.info & WATCH_INFO_LENGTH;
			printf("NOTIFY[%03zx]: ty=%06x sy=%02x i=%08x\n", (size_t)p, wn.type, wn.subtype, wn.info);
			if (len < sizeof(wn) || len > largest) {
				fprintf(stderr, "Bad message length: %zu/%zu\n", len, largest);
				return 1;
			}
			if (wn.type == WATCH_TYPE_META && wn.subtype == WATCH_META_REMOVAL_NOTIFICATION) {
				unsigned long long id = 0;
				if (len >= sizeof(struct watch_notification_removal)) {
					struct watch_notification_removal r;
					memcpy(&r, buf + p, sizeof(r));
					id = r.id;
				}
				printf("REMOVAL of watchpoint %08x id=%llx\n", (wn.info & WATCH_INFO_ID) >> 8, id);
			} else if (wn.type == WATCH_TYPE_META && wn.subtype == WATCH_META_LOSS_NOTIFICATION) {
				printf("-- LOSS --\n");
			} else {
				printf("USER tag=%u payload=%.*s\n", (wn.info & WATCH_INFO_ID) >> 8,
				       (int)(len - sizeof(wn)), (char *)buf + p + sizeof(wn));
			}
			p += len;
		}
		fflush(stdout);
	}
}
