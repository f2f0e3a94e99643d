package record

import (
	"encoding/binary"
	"fmt"
)

// Key notification subtypes (enum key_notification_subtype,
// <linux/watch_queue.h>).
const (
	KeyInstantiated uint8 = 0 // NOTIFY_KEY_INSTANTIATED: aux 0, or -error for negate/reject
	KeyUpdated      uint8 = 1 // NOTIFY_KEY_UPDATED
	KeyLinked       uint8 = 2 // NOTIFY_KEY_LINKED: aux = linked key, KeyID = keyring
	KeyUnlinked     uint8 = 3 // NOTIFY_KEY_UNLINKED: aux = unlinked key
	KeyCleared      uint8 = 4 // NOTIFY_KEY_CLEARED
	KeyRevoked      uint8 = 5 // NOTIFY_KEY_REVOKED
	KeyInvalidated  uint8 = 6 // NOTIFY_KEY_INVALIDATED
	KeySetattr      uint8 = 7 // NOTIFY_KEY_SETATTR
)

// KeyRecordSize is sizeof(struct key_notification).
const KeyRecordSize = 16

var keySubtypeNames = [...]string{"instantiated", "updated", "linked", "unlinked", "cleared", "revoked", "invalidated", "setattr"}

// KeySubtypeName names a key subtype as samples/watch_queue/watch_test.c
// does, or "unknown".
func KeySubtypeName(s uint8) string {
	if int(s) < len(keySubtypeNames) {
		return keySubtypeNames[s]
	}
	return "unknown"
}

// KeyNotification is struct key_notification: a change to key KeyID.
type KeyNotification struct {
	Subtype uint8
	Tag     Tag    // set by delivery; ignored when posting
	KeyID   uint32 // the key or keyring that changed
	Aux     uint32 // per-subtype, see the constants
}

// AppendBinary appends the 16-byte record.
func (k KeyNotification) AppendBinary(b []byte) ([]byte, error) {
	b, _ = Header{Type: TypeKey, Subtype: k.Subtype, Info: MakeInfo(KeyRecordSize, k.Tag, 0)}.AppendBinary(b)
	b = binary.LittleEndian.AppendUint32(b, k.KeyID)
	return binary.LittleEndian.AppendUint32(b, k.Aux), nil
}

// Key decodes a key record. Like the sample, a record of any length other
// than 16 is rejected.
func (r Record) Key() (KeyNotification, error) {
	if r.Type() != TypeKey {
		return KeyNotification{}, &RecordError{Reason: fmt.Sprintf("%v is not a key record", r)}
	}
	if len(r) != KeyRecordSize {
		return KeyNotification{}, &RecordError{Reason: fmt.Sprintf("key record of %d bytes, want %d", len(r), KeyRecordSize)}
	}
	return KeyNotification{
		Subtype: r.Subtype(), Tag: r.Tag(),
		KeyID: binary.LittleEndian.Uint32(r[8:]), Aux: binary.LittleEndian.Uint32(r[12:]),
	}, nil
}
