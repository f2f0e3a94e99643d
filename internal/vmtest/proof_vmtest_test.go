//go:build vmtest

package vmtest_test

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/internal/vmtest/guest"
)

// Constants from include/uapi/linux/watch_queue.h and keyctl.h (6.12).
const (
	ioctlWatchQueueSetSize   = 0x5760 // _IO('W', 0x60); argument: note count, by value
	ioctlWatchQueueSetFilter = 0x5761 // _IO('W', 0x61); argument: struct watch_notification_filter *
	watchTypeMeta            = 0      // WATCH_TYPE_META
	watchTypeKeyNotify       = 1      // WATCH_TYPE_KEY_NOTIFY
	watchMetaRemoval         = 0      // WATCH_META_REMOVAL_NOTIFICATION
	notifyKeyLinked          = 2      // NOTIFY_KEY_LINKED
	keyctlCapabilities       = 31     // KEYCTL_CAPABILITIES
	keyctlCaps1Notifications = 0x04   // KEYCTL_CAPS1_NOTIFICATIONS, in byte 1
	watchTag                 = 0x42
)

// record is one notification: struct watch_notification { u32 type:24,
// subtype:8; u32 info; } (little-endian bitfields: type is the low 24 bits)
// followed by type-specific payload; info & 0x7f is the length in bytes and
// (info >> 8) & 0xff the watch's tag.
type record struct {
	typ, subtype, length, tag uint32
	payload                   []byte
}

func parseRecords(t *testing.T, b []byte) []record {
	var recs []record
	for len(b) >= 8 {
		w0 := binary.LittleEndian.Uint32(b)
		info := binary.LittleEndian.Uint32(b[4:])
		n := int(info & 0x7f)
		if n < 8 || n > len(b) {
			t.Fatalf("bad record length %d in % x", n, b)
		}
		recs = append(recs, record{typ: w0 & 0xffffff, subtype: w0 >> 24, length: uint32(n), tag: (info >> 8) & 0xff, payload: b[8:n]})
		b = b[n:]
	}
	return recs
}

// TestWatchQueueKeyringLinked proves the kernel facility: a notification
// pipe, sized and filtered to NOTIFY_KEY_LINKED, watching a keyring, sees
// exactly the LINKED record of add_key (the UNLINKED that follows is
// filtered out) and then the REMOVAL record of the explicit unwatch, which
// bypasses the filter (kernel/watch_queue.c remove_watch_from_object).
func TestWatchQueueKeyringLinked(t *testing.T) {
	if !guest.InVM() {
		t.Skip("guest-only test")
	}
	// KEYCTL_JOIN_SESSION_KEYRING changes only the calling thread's
	// credentials: keep this goroutine on its thread, and let the thread die
	// with it (no UnlockOSThread) so the session does not leak.
	runtime.LockOSThread()

	caps := make([]byte, 8)
	if _, _, e := unix.Syscall(unix.SYS_KEYCTL, keyctlCapabilities, uintptr(unsafe.Pointer(&caps[0])), uintptr(len(caps))); e != 0 {
		t.Fatalf("KEYCTL_CAPABILITIES: %v", e)
	}
	if caps[1]&keyctlCaps1Notifications == 0 {
		t.Fatalf("KEYCTL_CAPABILITIES % x: no CAPS1_NOTIFICATIONS (kernel without CONFIG_KEY_NOTIFICATIONS?)", caps)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0); err != nil {
		t.Fatalf("join anonymous session keyring: %v", err)
	}
	ring, err := unix.AddKey("keyring", "watchq-proof", nil, unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		t.Fatalf("add_key keyring: %v", err)
	}

	// O_NOTIFICATION_PIPE is O_EXCL (include/uapi/linux/watch_queue.h).
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_EXCL|unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatalf("pipe2(O_NOTIFICATION_PIPE): %v", err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fds[0]), ioctlWatchQueueSetSize, 256); e != 0 {
		t.Fatalf("IOC_WATCH_QUEUE_SET_SIZE: %v", e)
	}
	// struct watch_notification_filter { u32 nr_filters, __reserved;
	// struct watch_notification_type_filter { u32 type, info_filter,
	// info_mask, subtype_filter[8]; } filters[]; }
	filter := [2 + 11]uint32{1, 0, watchTypeKeyNotify, 0, 0, 1 << notifyKeyLinked}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fds[0]), ioctlWatchQueueSetFilter, uintptr(unsafe.Pointer(&filter[0]))); e != 0 {
		t.Fatalf("IOC_WATCH_QUEUE_SET_FILTER: %v", e)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, ring, fds[0], watchTag, 0); err != nil {
		t.Fatalf("KEYCTL_WATCH_KEY: %v", err)
	}
	// write() on a notification pipe is refused with EXDEV (fs/pipe.c).
	if _, err := unix.Write(fds[1], []byte("x")); !errors.Is(err, unix.EXDEV) {
		t.Errorf("write on notification pipe: got %v, want EXDEV", err)
	}

	key, err := unix.AddKey("user", "watchq-proof-key", []byte("v1"), ring)
	if err != nil {
		t.Fatalf("add_key user: %v", err)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_UNLINK, key, ring, 0, 0); err != nil {
		t.Fatalf("KEYCTL_UNLINK: %v", err)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, ring, fds[0], -1, 0); err != nil {
		t.Fatalf("KEYCTL_WATCH_KEY -1 (unwatch): %v", err)
	}

	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	for len(parseRecords(t, got)) < 2 && time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fds[0]), Events: unix.POLLIN}}
		unix.Poll(pfd, 1000)
		for {
			n, err := unix.Read(fds[0], buf)
			if err != nil || n <= 0 {
				break
			}
			got = append(got, buf[:n]...)
		}
	}
	t.Logf("records: % x", got)
	recs := parseRecords(t, got)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want LINKED + REMOVAL: % x", len(recs), got)
	}
	l := recs[0]
	if l.typ != watchTypeKeyNotify || l.subtype != notifyKeyLinked || l.length != 16 || l.tag != watchTag {
		t.Errorf("first record type %d subtype %d len %d tag %#x, want KEY_NOTIFY/LINKED/16/%#x", l.typ, l.subtype, l.length, l.tag, watchTag)
	} else if id, aux := binary.LittleEndian.Uint32(l.payload), binary.LittleEndian.Uint32(l.payload[4:]); int(id) != ring || int(aux) != key {
		t.Errorf("LINKED key_id %d aux %d, want keyring %d, key %d", id, aux, ring, key)
	}
	r := recs[1]
	if r.typ != watchTypeMeta || r.subtype != watchMetaRemoval || r.tag != watchTag {
		t.Errorf("second record type %d subtype %d tag %#x, want META/REMOVAL/%#x", r.typ, r.subtype, r.tag, watchTag)
	}
}
