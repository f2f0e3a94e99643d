package protocol

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"github.com/watchq/watchq/record"
)

// FuzzParse feeds arbitrary packets to the daemon's decoder: it must never
// panic, every failure must carry an errno, and whatever decodes must
// re-encode to the same bytes.
func FuzzParse(f *testing.F) {
	f.Add(AppendMessage(nil, OpHello, 1, []byte{1, 0, 0, 0}))
	f.Add(AppendMessage(nil, OpCreateQueue, 2, []byte{64, 0, 0, 0}))
	f.Add(AppendMessage(nil, OpCreateQueue, 2, []byte{64, 0, 0, 0, 0, 16, 0, 0})) // version 2: read size 4096
	f.Add(AppendMessage(nil, OpCreateQueue, 2, []byte{64, 0, 0, 0, 0, 0, 0, 0}))  // read size 0: EINVAL
	f.Add(AppendMessage(nil, OpSetFilter, 3, append([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 44)...)))
	f.Add(AppendMessage(nil, OpWatchDevices, 4, []byte{1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0}))
	f.Add(AppendMessage(nil, OpPublish, 5, []byte{1, 0, 0x80, 0, 8, 0, 0, 0}))
	f.Add(AppendMessage(nil, OpCreateRing, 6, []byte{0, 2, 0, 0, 16, 0, 0, 0}))
	f.Add(AppendMessage(nil, OpCreateRing, 7, []byte{0, 2, 0, 0, 3, 0, 0, 0}))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, body, err := ParseMessage(b)
		if err != nil {
			checkErrno(t, err)
			return
		}
		req, err := ParseRequest(h.Op, body)
		if err != nil {
			checkErrno(t, err)
			return
		}
		if req.Op() != h.Op {
			t.Fatalf("op %v decoded as %v", h.Op, req.Op())
		}
		re, err := req.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(re, body) {
			t.Fatalf("%v: %x re-encodes as %x", h.Op, body, re)
		}
		if sf, ok := req.(SetFilter); ok && len(sf.Filter) > 0 {
			if _, err := record.ParseFilter(sf.Filter); err != nil {
				checkErrno(t, err)
			}
		}
	})
}

func checkErrno(t *testing.T, err error) {
	t.Helper()
	var e syscall.Errno
	if !errors.As(err, &e) {
		t.Fatalf("error without errno: %v", err)
	}
	if errno, reason := ErrnoOf(err); errno == 0 || reason == "" {
		t.Fatalf("ErrnoOf(%v) = %v, %q", err, errno, reason)
	}
}
