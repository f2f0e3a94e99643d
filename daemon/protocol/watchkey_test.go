package protocol

import (
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
)

// TestWatchKey: watch-key decodes a queue, a serial and a tag; a special
// id (the client resolves those) or a body of the wrong size is EINVAL.
func TestWatchKey(t *testing.T) {
	req, err := ParseRequest(OpWatchKey, u32s(nil, 3, 123456, ^uint32(0)))
	if err != nil || req != (WatchKey{Queue: 3, Key: 123456, Tag: -1}) {
		t.Fatalf("request: %v %v", req, err)
	}
	if OpWatchKey.String() != "watch-key" {
		t.Errorf("name %q", OpWatchKey)
	}
	for _, bad := range [][]byte{
		u32s(nil, 3, ^uint32(2), 1), // @s: -3
		u32s(nil, 3, 0, 1),
		u32s(nil, 3, 123456),
		u32s(nil, 3, 123456, 1, 0),
	} {
		if _, err := ParseRequest(OpWatchKey, bad); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%x: %v, want EINVAL", bad, err)
		}
	}
}

// TestServerStatsKeyBackend: the key backend is the reply's last value,
// and a reply from a daemon without it parses as KeyBackendNone.
func TestServerStatsKeyBackend(t *testing.T) {
	s := ServerStats{UID: 7, KeyBackend: KeyBackendTraced}
	b, _ := s.AppendBinary(nil)
	if got, err := ParseServerStats(b); err != nil || got.KeyBackend != KeyBackendTraced {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if v := binary.NativeEndian.Uint64(b[len(b)-8:]); v != KeyBackendTraced {
		t.Errorf("last value %d, want the key backend", v)
	}
	old := b[:len(b)-8]
	binary.NativeEndian.PutUint32(old, binary.NativeEndian.Uint32(old)-1)
	got, err := ParseServerStats(old)
	if err != nil || got.KeyBackend != KeyBackendNone || got.UID != 7 {
		t.Errorf("reply without the field: %+v %v", got, err)
	}
}

// FuzzServerStats: the server-stats decoder, whose last value (the key
// backend) a reply may lack, never panics, fails only with EINVAL, and
// what it decodes re-encodes to a reply that decodes the same.
func FuzzServerStats(f *testing.F) {
	full, _ := ServerStats{UID: 1000, Watches: 3, KeyBackend: KeyBackendTraced}.AppendBinary(nil)
	f.Add(full)
	old := append([]byte(nil), full[:len(full)-8]...)
	binary.NativeEndian.PutUint32(old, binary.NativeEndian.Uint32(old)-1)
	f.Add(old)
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseServerStats(b)
		if err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("error without EINVAL: %v", err)
			}
			return
		}
		re, _ := s.AppendBinary(nil)
		s2, err := ParseServerStats(re)
		if err != nil || s2 != s {
			t.Fatalf("%x decodes as %+v, re-encoded as %+v (%v)", b, s, s2, err)
		}
	})
}
