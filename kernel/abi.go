package kernel

import (
	"encoding/binary"
	"fmt"

	"github.com/watchq/watchq/record"
)

// Constants from include/uapi/linux/watch_queue.h and
// include/uapi/linux/keyctl.h that golang.org/x/sys/unix does not define.
// The record format itself (header, filter struct, sizes, tags) is
// package record's.
const (
	// IocWatchQueueSetSize is IOC_WATCH_QUEUE_SET_SIZE, _IO('W', 0x60):
	// the argument is the number of notes, by value.
	IocWatchQueueSetSize = 0x5760
	// IocWatchQueueSetFilter is IOC_WATCH_QUEUE_SET_FILTER, _IO('W', 0x61):
	// the argument points to a struct watch_notification_filter.
	IocWatchQueueSetFilter = 0x5761

	// capsNotifications is KEYCTL_CAPS1_NOTIFICATIONS: bit 2 of byte 1
	// of the KEYCTL_CAPABILITIES result.
	capsNotifications = 0x04
)

// checkFilterBytes makes sure the kernel will not read past b: it copies the
// 8-byte header, then nr_filters*44 bytes when nr_filters is in 1..16.
// Everything else about the filter is the kernel's to judge.
func checkFilterBytes(b []byte) error {
	if len(b) < record.FilterHeaderSize {
		return &record.InvalidError{Reason: fmt.Sprintf("filter of %d bytes is shorter than its header", len(b))}
	}
	nr := binary.LittleEndian.Uint32(b)
	if nr >= 1 && nr <= record.MaxFilters && len(b) < record.FilterHeaderSize+int(nr)*record.FilterEntrySize {
		return &record.InvalidError{Reason: fmt.Sprintf("filter of %d bytes is too short for %d entries", len(b), nr)}
	}
	return nil
}
