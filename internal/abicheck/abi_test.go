//go:build cgo && abicheck

package abicheck

import (
	"bytes"
	"testing"

	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// TestLayoutsMatchUAPI holds every size, offset and constant watchq uses to
// what gcc makes of the kernel headers.
func TestLayoutsMatchUAPI(t *testing.T) {
	facts := Facts()
	want := map[string]uint64{
		"sizeof(struct watch_notification)":             record.HeaderSize,
		"sizeof(struct watch_notification_removal)":     record.RemovalSize,
		"offsetof(watch_notification_removal, id)":      8,
		"sizeof(struct key_notification)":               record.KeyRecordSize,
		"offsetof(key_notification, key_id)":            8,
		"offsetof(key_notification, aux)":               12,
		"sizeof(struct watch_notification_type_filter)": record.FilterEntrySize,
		"offsetof(type_filter, info_filter)":            4,
		"offsetof(type_filter, info_mask)":              8,
		"offsetof(type_filter, subtype_filter)":         12,
		"sizeof(struct watch_notification_filter)":      record.FilterHeaderSize,
		"sizeof(struct block_notification)":             record.BlockRecordSize,
		"offsetof(block_notification, dev)":             8,
		"offsetof(block_notification, sector)":          16,
		"sizeof(struct usb_notification)":               record.USBStructSize,
		"offsetof(usb_notification, error)":             8,
		"offsetof(usb_notification, name_len)":          16,
		"offsetof(usb_notification, name)":              record.USBNameOffset,
		"O_NOTIFICATION_PIPE":                           unix.O_EXCL,
		"IOC_WATCH_QUEUE_SET_SIZE":                      0x5760,
		"IOC_WATCH_QUEUE_SET_FILTER":                    0x5761,
		"WATCH_TYPE_META":                               uint64(record.TypeMeta),
		"WATCH_TYPE_KEY_NOTIFY":                         uint64(record.TypeKey),
		"WATCH_INFO_LENGTH":                             uint64(record.InfoLength),
		"WATCH_INFO_LENGTH__SHIFT":                      record.InfoLengthShift,
		"WATCH_INFO_ID":                                 uint64(record.InfoID),
		"WATCH_INFO_ID__SHIFT":                          record.InfoIDShift,
		"WATCH_INFO_TYPE_INFO":                          uint64(record.InfoTypeInfo),
		"WATCH_INFO_TYPE_INFO__SHIFT":                   record.InfoTypeInfoShift,
		"WATCH_INFO_FLAG_0":                             uint64(record.InfoFlag0),
		"WATCH_INFO_FLAG_7":                             uint64(record.InfoFlag0 << 7),
		"WATCH_META_REMOVAL_NOTIFICATION":               uint64(record.MetaRemoval),
		"WATCH_META_LOSS_NOTIFICATION":                  uint64(record.MetaLoss),
		"NOTIFY_KEY_INSTANTIATED":                       uint64(record.KeyInstantiated),
		"NOTIFY_KEY_UPDATED":                            uint64(record.KeyUpdated),
		"NOTIFY_KEY_LINKED":                             uint64(record.KeyLinked),
		"NOTIFY_KEY_UNLINKED":                           uint64(record.KeyUnlinked),
		"NOTIFY_KEY_CLEARED":                            uint64(record.KeyCleared),
		"NOTIFY_KEY_REVOKED":                            uint64(record.KeyRevoked),
		"NOTIFY_KEY_INVALIDATED":                        uint64(record.KeyInvalidated),
		"NOTIFY_KEY_SETATTR":                            uint64(record.KeySetattr),
		"KEYCTL_WATCH_KEY":                              unix.KEYCTL_WATCH_KEY,
		"KEYCTL_CAPABILITIES":                           unix.KEYCTL_CAPABILITIES,
		"KEYCTL_CAPS1_NOTIFICATIONS":                    unix.KEYCTL_CAPS1_NOTIFICATIONS,
		"KEY_SPEC_THREAD_KEYRING":                       neg(unix.KEY_SPEC_THREAD_KEYRING),
		"KEY_SPEC_PROCESS_KEYRING":                      neg(unix.KEY_SPEC_PROCESS_KEYRING),
		"KEY_SPEC_SESSION_KEYRING":                      neg(unix.KEY_SPEC_SESSION_KEYRING),
		"KEY_SPEC_USER_KEYRING":                         neg(unix.KEY_SPEC_USER_KEYRING),
		"KEY_SPEC_USER_SESSION_KEYRING":                 neg(unix.KEY_SPEC_USER_SESSION_KEYRING),
	}
	if len(want) != len(facts) {
		t.Errorf("checking %d facts of %d", len(want), len(facts))
	}
	for name, c := range facts {
		g, ok := want[name]
		if !ok {
			t.Errorf("%s: not checked", name)
			continue
		}
		if g != c {
			t.Errorf("%s: C says %#x, watchq uses %#x", name, c, g)
		}
	}
}

// TestBitfieldEncoding holds the Go encoders to gcc's bit-field layout.
func TestBitfieldEncoding(t *testing.T) {
	for _, h := range []record.Header{
		{Type: 0x123456, Subtype: 0xab, Info: 0x110},
		{Type: 0xffffff, Subtype: 0xff, Info: 0xffffffff},
		{Type: record.TypeKey, Subtype: record.KeyLinked, Info: 0x0210},
		{Type: record.TypeUserFirst, Subtype: 1, Info: 8},
	} {
		got, _ := h.AppendBinary(nil)
		if want := EncodeHeader(uint32(h.Type), uint32(h.Subtype), h.Info); !bytes.Equal(got, want) {
			t.Errorf("%+v: Go % x, C % x", h, got, want)
		}
	}
	k := record.KeyNotification{Subtype: record.KeySetattr, Tag: 2, KeyID: 0xdeadbeef, Aux: 42}
	got, _ := k.AppendBinary(nil)
	if want := EncodeKey(uint32(k.Subtype), record.MakeInfo(16, 2, 0), k.KeyID, k.Aux); !bytes.Equal(got, want) {
		t.Errorf("key: Go % x, C % x", got, want)
	}
	f, err := record.NewFilter(record.FilterEntry{Type: record.TypeKey, InfoFilter: 0x200, InfoMask: 0xff00, Subtypes: [8]uint32{0x5, 0, 0, 0, 0, 0, 0, 0x80000000}})
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := f.MarshalBinary()
	if want := EncodeFilterEntry(1, 0x200, 0xff00, 0x5, 0x80000000); !bytes.Equal(fb[record.FilterHeaderSize:], want) {
		t.Errorf("filter entry: Go % x, C % x", fb[8:], want)
	}
}
