//go:build linux

package keys

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/source/keys/internal/keytrace"
)

// TestTracedRingDrops: events the tracer's ring dropped become in-band
// loss with their count on every watched key, before the next record.
func TestTracedRingDrops(t *testing.T) {
	testenv.RequireRoot(t)
	src := openTraced(t)
	q := watchq.NewQueue()
	q.SetSize(64)
	defer q.Close()
	ring := newKeyring(t, fmt.Sprintf("wq-drops-%d", time.Now().UnixNano()))
	must(t, "watch", src.Watch(q, ring, 7, nil))
	must(t, "sync", src.Sync(context.Background()))
	newScenario(t, src, q).drain()
	b := src.impl.(*tracedBackend)
	// As if the ring had dropped 5 events before this one (another
	// process's marker: no waiter, no records).
	b.handle(&keytrace.Event{Kind: keytrace.KindMarker, TGID: uint32(os.Getpid()) + 1, Drops: b.reported + 5})
	k := addKey(t, "user", "wq-drops-key", []byte("v"), ring)
	must(t, "sync", src.Sync(context.Background()))
	got := newScenario(t, src, q).drain()
	if len(got) != 2 || got[0].sub != "loss" || got[1] != (ev{"linked", ring, uint32(k), 7}) {
		t.Fatalf("got %v, want a loss then the LINKED", got)
	}
	if n := q.Stats().Lost; n != 5 {
		t.Errorf("queue lost %d, want the 5 the ring dropped", n)
	}
}

// TestTracedFailedCallsPostNothing: a failed call is no change.
func TestTracedFailedCallsPostNothing(t *testing.T) {
	testenv.RequireRoot(t)
	src := openTraced(t)
	q := watchq.NewQueue()
	q.SetSize(64)
	defer q.Close()
	ring := newKeyring(t, fmt.Sprintf("wq-fail-%d", time.Now().UnixNano()))
	must(t, "watch", src.Watch(q, ring, 1, nil))
	unix.KeyctlInt(unix.KEYCTL_UNLINK, 12345, int(ring), 0, 0)       // ENOKEY
	unix.KeyctlInt(unix.KEYCTL_LINK, int(ring), int(ring), 0, 0)     // EDEADLK
	unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(ring), []byte("x"), 0) // EOPNOTSUPP: keyrings have no update
	unix.KeyctlInt(unix.KEYCTL_SETPERM, int(ring), 0x7fffffff, 0, 0) // EINVAL
	unix.AddKey("user", "wq-fail", []byte("v"), 0x7ffffff0)          // ENOKEY: no such keyring
	must(t, "sync", src.Sync(context.Background()))
	if got := newScenario(t, src, q).drain(); len(got) != 0 {
		t.Errorf("failed calls posted %v", got)
	}
}
