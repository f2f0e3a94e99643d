//go:build cgo && abicheck

// Package abicheck compiles the kernel's UAPI headers (<linux/watch_queue.h>
// and <linux/keyctl.h> from Debian's linux-libc-dev) with cgo and exposes
// their sizes, offsets and constants, so a test can hold watchq's Go
// layouts to them. It builds only with the abicheck tag:
//
//	go test -tags abicheck ./internal/abicheck
package abicheck

/*
#include <stddef.h>
#include <string.h>
#include <linux/watch_queue.h>
#include <linux/keyctl.h>

// The ver #2 patch set's device records, which never reached the UAPI
// headers: copied from "block: Add block layer notifications" and "usb: Add
// USB subsystem notifications".
struct block_notification {
	struct watch_notification watch;
	__u64 dev;
	__u64 sector;
};
struct usb_notification {
	struct watch_notification watch;
	__u32 error;
	__u32 reserved;
	__u8 name_len;
	__u8 name[0];
};

static void enc_header(unsigned char *b, unsigned type, unsigned subtype, unsigned info) {
	struct watch_notification n;
	memset(&n, 0, sizeof n);
	n.type = type;
	n.subtype = subtype;
	n.info = info;
	memcpy(b, &n, sizeof n);
}

static void enc_key(unsigned char *b, unsigned subtype, unsigned info, unsigned key, unsigned aux) {
	struct key_notification n;
	memset(&n, 0, sizeof n);
	n.watch.type = WATCH_TYPE_KEY_NOTIFY;
	n.watch.subtype = subtype;
	n.watch.info = info;
	n.key_id = key;
	n.aux = aux;
	memcpy(b, &n, sizeof n);
}

static void enc_filter_entry(unsigned char *b, unsigned type, unsigned ifilter, unsigned imask, unsigned sub0, unsigned sub7) {
	struct watch_notification_type_filter f;
	memset(&f, 0, sizeof f);
	f.type = type;
	f.info_filter = ifilter;
	f.info_mask = imask;
	f.subtype_filter[0] = sub0;
	f.subtype_filter[7] = sub7;
	memcpy(b, &f, sizeof f);
}
*/
import "C"

import "unsafe"

// neg converts a negative special key id to the uint64 with the same bits.
func neg(v int64) uint64 { return uint64(v) }

// Facts returns every size, offset and constant the Go code depends on,
// as the C compiler sees them.
func Facts() map[string]uint64 {
	return map[string]uint64{
		"sizeof(struct watch_notification)":             C.sizeof_struct_watch_notification,
		"sizeof(struct watch_notification_removal)":     C.sizeof_struct_watch_notification_removal,
		"offsetof(watch_notification_removal, id)":      uint64(unsafe.Offsetof(C.struct_watch_notification_removal{}.id)),
		"sizeof(struct key_notification)":               C.sizeof_struct_key_notification,
		"offsetof(key_notification, key_id)":            uint64(unsafe.Offsetof(C.struct_key_notification{}.key_id)),
		"offsetof(key_notification, aux)":               uint64(unsafe.Offsetof(C.struct_key_notification{}.aux)),
		"sizeof(struct watch_notification_type_filter)": C.sizeof_struct_watch_notification_type_filter,
		"offsetof(type_filter, info_filter)":            uint64(unsafe.Offsetof(C.struct_watch_notification_type_filter{}.info_filter)),
		"offsetof(type_filter, info_mask)":              uint64(unsafe.Offsetof(C.struct_watch_notification_type_filter{}.info_mask)),
		"offsetof(type_filter, subtype_filter)":         uint64(unsafe.Offsetof(C.struct_watch_notification_type_filter{}.subtype_filter)),
		"sizeof(struct watch_notification_filter)":      C.sizeof_struct_watch_notification_filter,
		"sizeof(struct block_notification)":             C.sizeof_struct_block_notification,
		"offsetof(block_notification, dev)":             uint64(unsafe.Offsetof(C.struct_block_notification{}.dev)),
		"offsetof(block_notification, sector)":          uint64(unsafe.Offsetof(C.struct_block_notification{}.sector)),
		"sizeof(struct usb_notification)":               C.sizeof_struct_usb_notification,
		"offsetof(usb_notification, error)":             uint64(unsafe.Offsetof(C.struct_usb_notification{}.error)),
		"offsetof(usb_notification, name_len)":          uint64(unsafe.Offsetof(C.struct_usb_notification{}.name_len)),
		"offsetof(usb_notification, name)":              uint64(unsafe.Offsetof(C.struct_usb_notification{}.name)),
		"O_NOTIFICATION_PIPE":                           C.O_NOTIFICATION_PIPE,
		"IOC_WATCH_QUEUE_SET_SIZE":                      C.IOC_WATCH_QUEUE_SET_SIZE,
		"IOC_WATCH_QUEUE_SET_FILTER":                    C.IOC_WATCH_QUEUE_SET_FILTER,
		"WATCH_TYPE_META":                               C.WATCH_TYPE_META,
		"WATCH_TYPE_KEY_NOTIFY":                         C.WATCH_TYPE_KEY_NOTIFY,
		"WATCH_INFO_LENGTH":                             C.WATCH_INFO_LENGTH,
		"WATCH_INFO_LENGTH__SHIFT":                      C.WATCH_INFO_LENGTH__SHIFT,
		"WATCH_INFO_ID":                                 C.WATCH_INFO_ID,
		"WATCH_INFO_ID__SHIFT":                          C.WATCH_INFO_ID__SHIFT,
		"WATCH_INFO_TYPE_INFO":                          C.WATCH_INFO_TYPE_INFO,
		"WATCH_INFO_TYPE_INFO__SHIFT":                   C.WATCH_INFO_TYPE_INFO__SHIFT,
		"WATCH_INFO_FLAG_0":                             C.WATCH_INFO_FLAG_0,
		"WATCH_INFO_FLAG_7":                             C.WATCH_INFO_FLAG_7,
		"WATCH_META_REMOVAL_NOTIFICATION":               C.WATCH_META_REMOVAL_NOTIFICATION,
		"WATCH_META_LOSS_NOTIFICATION":                  C.WATCH_META_LOSS_NOTIFICATION,
		"NOTIFY_KEY_INSTANTIATED":                       C.NOTIFY_KEY_INSTANTIATED,
		"NOTIFY_KEY_UPDATED":                            C.NOTIFY_KEY_UPDATED,
		"NOTIFY_KEY_LINKED":                             C.NOTIFY_KEY_LINKED,
		"NOTIFY_KEY_UNLINKED":                           C.NOTIFY_KEY_UNLINKED,
		"NOTIFY_KEY_CLEARED":                            C.NOTIFY_KEY_CLEARED,
		"NOTIFY_KEY_REVOKED":                            C.NOTIFY_KEY_REVOKED,
		"NOTIFY_KEY_INVALIDATED":                        C.NOTIFY_KEY_INVALIDATED,
		"NOTIFY_KEY_SETATTR":                            C.NOTIFY_KEY_SETATTR,
		"KEYCTL_WATCH_KEY":                              C.KEYCTL_WATCH_KEY,
		"KEYCTL_CAPABILITIES":                           C.KEYCTL_CAPABILITIES,
		"KEYCTL_CAPS1_NOTIFICATIONS":                    C.KEYCTL_CAPS1_NOTIFICATIONS,
		"KEY_SPEC_THREAD_KEYRING":                       neg(C.KEY_SPEC_THREAD_KEYRING),
		"KEY_SPEC_PROCESS_KEYRING":                      neg(C.KEY_SPEC_PROCESS_KEYRING),
		"KEY_SPEC_SESSION_KEYRING":                      neg(C.KEY_SPEC_SESSION_KEYRING),
		"KEY_SPEC_USER_KEYRING":                         neg(C.KEY_SPEC_USER_KEYRING),
		"KEY_SPEC_USER_SESSION_KEYRING":                 neg(C.KEY_SPEC_USER_SESSION_KEYRING),
	}
}

// EncodeHeader returns the 8 bytes of a struct watch_notification as the C
// compiler lays out its bit-fields.
func EncodeHeader(typ, subtype, info uint32) []byte {
	b := make([]byte, C.sizeof_struct_watch_notification)
	C.enc_header((*C.uchar)(unsafe.Pointer(&b[0])), C.uint(typ), C.uint(subtype), C.uint(info))
	return b
}

// EncodeKey returns the 16 bytes of a struct key_notification.
func EncodeKey(subtype, info, key, aux uint32) []byte {
	b := make([]byte, C.sizeof_struct_key_notification)
	C.enc_key((*C.uchar)(unsafe.Pointer(&b[0])), C.uint(subtype), C.uint(info), C.uint(key), C.uint(aux))
	return b
}

// EncodeFilterEntry returns the 44 bytes of a struct
// watch_notification_type_filter with subtype words 0 and 7 set.
func EncodeFilterEntry(typ, infoFilter, infoMask, sub0, sub7 uint32) []byte {
	b := make([]byte, C.sizeof_struct_watch_notification_type_filter)
	C.enc_filter_entry((*C.uchar)(unsafe.Pointer(&b[0])), C.uint(typ), C.uint(infoFilter), C.uint(infoMask), C.uint(sub0), C.uint(sub7))
	return b
}
