package record

// Tag is a watch tag: the byte (WATCH_INFO_ID, bits 8..15 of info) that
// every record delivered under a watch carries, chosen by the watcher when
// it sets the watch.
type Tag uint8

// MaxTag is the largest tag.
const MaxTag Tag = 0xff

// RemoveWatch is the tag argument that removes a watch instead of setting
// one: KEYCTL_WATCH_KEY's -1 (keyctl_watch_key), and the same in watchqd's
// protocol for devices and publishers.
const RemoveWatch = -1

// ParseTagArg checks a tag argument as keyctl_watch_key does: 0..255 sets
// a watch with that tag; RemoveWatch (-1) removes it (remove is true); any
// other value is EINVAL. This is the one place the -1..255 range is
// checked; the Go API takes a Tag to set and has separate Unwatch methods.
func ParseTagArg(n int64) (tag Tag, remove bool, err error) {
	switch {
	case n == RemoveWatch:
		return 0, true, nil
	case n >= 0 && n <= int64(MaxTag):
		return Tag(n), false, nil
	}
	return 0, false, errInval("tag %d out of range %d..%d", n, RemoveWatch, MaxTag)
}

// TagArg is the inverse of ParseTagArg: the wire or kernel argument for
// setting a watch with tag t.
func TagArg(t Tag) int32 { return int32(t) }

// ObjectID names a watched object within its kind: a key's serial, a
// publisher's type, 0 for the one device list. It is the id a removal
// record carries (struct watch_notification_removal's u64 id).
type ObjectID uint64
