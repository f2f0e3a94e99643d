package protocol

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// TestParsePathRequest: watch-mount and watch-sb round-trip, and every
// bound on the path is checked with its errno before anything is kept.
func TestParsePathRequest(t *testing.T) {
	for _, op := range []Op{OpWatchMount, OpWatchSuperblock} {
		body := func(tag int32, p string) []byte {
			b, _ := WatchMount{Queue: 5, Tag: tag, Path: p}.AppendBinary(nil)
			return b
		}
		long := "/" + strings.Repeat("a", MaxPath-1)
		for _, tc := range []struct {
			body []byte
			want syscall.Errno
		}{
			{body(2, "/"), 0},
			{body(-1, "/srv/../x"), 0},
			{body(2, long), 0},
			{body(2, long+"b"), syscall.ENAMETOOLONG},
			{body(2, ""), syscall.EINVAL},
			{body(2, "srv"), syscall.EINVAL},
			{body(2, "/a\x00b"), syscall.EINVAL},
			{[]byte{5, 0, 0, 0}, syscall.EINVAL},
		} {
			req, err := ParseRequest(op, tc.body)
			if tc.want != 0 {
				if !errors.Is(err, tc.want) {
					t.Errorf("%v %q: %v, want %v", op, tc.body, err, tc.want)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%v %q: %v", op, tc.body, err)
			}
			if req.Op() != op {
				t.Errorf("%v decoded as %v", op, req.Op())
			}
			re, _ := req.AppendBinary(nil)
			if string(re) != string(tc.body) {
				t.Errorf("%v: %q re-encodes as %q", op, tc.body, re)
			}
		}
	}
	if s := OpWatchMount.String() + " " + OpWatchSuperblock.String(); s != "watch-mount watch-sb" {
		t.Errorf("names %q", s)
	}
}
