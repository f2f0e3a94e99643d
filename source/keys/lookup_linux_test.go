//go:build linux

package keys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
)

// permNoView is permAll without View for possessor and user: the owner may
// still change the key's permissions back (SetAttr) but not view it.
const permNoView = 0x3e3e0000

// drainQueue returns what q holds, decoded.
func drainQueue(t *testing.T, q *watchq.Queue) []ev {
	t.Helper()
	var out []ev
	buf := make([]byte, 4096)
	for {
		n, err := q.TryRead(buf)
		if errors.Is(err, watchq.ErrWouldBlock) {
			return out
		}
		must(t, "TryRead", err)
		for r := range record.Records(buf[:n]) {
			out = append(out, toEv(t, r))
		}
	}
}

// TestUnwatchNeedsView: KEYCTL_WATCH_KEY with -1 looks the key up with
// KEY_NEED_VIEW before it removes anything (keyctl_watch_key), so a key
// the process may no longer view cannot be unwatched: EACCES, and the
// watch stays. Once View is back, Unwatch works and posts the removal.
func TestUnwatchNeedsView(t *testing.T) {
	testenv.RequireRoot(t) // not for the privilege: for a key of our own to setperm
	for _, b := range lifecycleBackends(t) {
		t.Run(b.String(), func(t *testing.T) {
			src, q := openBackend(t, b, 0, 64)
			ring := newKeyring(t, "wq-unwatch-view-"+b.String())
			k := addKey(t, "user", "wq-unwatch-view", []byte("v"), ring)
			must(t, "setperm", unix.KeyctlSetperm(int(k), permAll))
			must(t, "watch", src.Watch(q, k, 5, nil))
			must(t, "sync", src.Sync(t.Context()))
			drainQueue(t, q)

			must(t, "setperm no view", unix.KeyctlSetperm(int(k), permNoView))
			if err := src.Unwatch(q, k); !errors.Is(err, unix.EACCES) {
				t.Fatalf("Unwatch of a key we may not view = %v, want EACCES", err)
			}
			if src.Watched() != 1 {
				t.Errorf("after a refused Unwatch %d keys watched, want 1", src.Watched())
			}
			must(t, "setperm view", unix.KeyctlSetperm(int(k), permAll))
			must(t, "sync", src.Sync(t.Context()))
			drainQueue(t, q) // the kernel backend's two SETATTRs
			must(t, "unwatch with view", src.Unwatch(q, k))
			if got := drainQueue(t, q); len(got) != 1 || got[0].sub != "removal" || got[0].key != k || got[0].tag != 5 {
				t.Errorf("after Unwatch: %+v, want the removal of %d with tag 5", got, k)
			}
		})
	}
}

// negativeKey makes a negatively instantiated user key in ring: a
// request_key(2) whose upcall negates it (keyutils' request-key.conf rule
// for "debug:*" with callout "negate", or the guest's request-key helper),
// and returns its serial, found in the keyring.
func negativeKey(t *testing.T, ring int32, desc string) int32 {
	t.Helper()
	testenv.RequireFile(t, "/sbin/request-key")
	_, err := unix.RequestKey("user", desc, "negate", int(ring))
	if !errors.Is(err, unix.ENOKEY) {
		testenv.Skip(t, "request_key(%q, \"negate\") = %v, want ENOKEY from a negating upcall", desc, err)
	}
	b, err := readKey(ring, make([]byte, 64))
	must(t, "read keyring", err)
	for len(b) >= 4 {
		id := int32(binary.NativeEndian.Uint32(b))
		b = b[4:]
		if d, err := describe(id); err == nil && d.Description == desc {
			return id
		}
	}
	t.Fatalf("negative key %q not linked into keyring %d", desc, ring)
	return 0
}

// negativeSeq makes negative keys' descriptions unique within the process.
var negativeSeq int

// TestWatchNegativeKey: the watch's lookup has no KEY_LOOKUP_PARTIAL, so
// the kernel refuses a negatively instantiated key with its error (ENOKEY
// after a negate); KEYCTL_DESCRIBE alone (KEY_LOOKUP_PARTIAL) would
// accept it. Both backends refuse it the kernel's way, for Watch and
// Unwatch.
func TestWatchNegativeKey(t *testing.T) {
	testenv.RequireRoot(t)
	for _, b := range lifecycleBackends(t) {
		t.Run(b.String(), func(t *testing.T) {
			src, q := openBackend(t, b, 0, 64)
			ring := newKeyring(t, "wq-negative-"+b.String())
			// A description never used before: request_key would find an
			// earlier run's negative key and construct nothing.
			negativeSeq++
			k := negativeKey(t, ring, fmt.Sprintf("debug:wq-negative-%s-%d-%d-%d", b, os.Getpid(), time.Now().UnixNano(), negativeSeq))
			if _, err := describe(k); err != nil {
				t.Fatalf("KEYCTL_DESCRIBE of the negative key: %v (the test wants it viewable)", err)
			}
			if err := src.Watch(q, k, 1, nil); !errors.Is(err, unix.ENOKEY) {
				t.Fatalf("Watch of a negative key = %v, want ENOKEY", err)
			}
			if src.Watched() != 0 {
				t.Errorf("%d keys watched after a refused Watch", src.Watched())
			}
			if err := src.Unwatch(q, k); !errors.Is(err, unix.ENOKEY) {
				t.Errorf("Unwatch of a negative key = %v, want ENOKEY", err)
			}
		})
	}
}
