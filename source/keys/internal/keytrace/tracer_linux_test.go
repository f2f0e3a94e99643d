//go:build linux

package keytrace

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
)

// openTracer opens a tracer or skips where this machine cannot run one.
func openTracer(t *testing.T) *Tracer {
	t.Helper()
	testenv.RequireRoot(t)
	tr, err := Open(Config{})
	testenv.SkipIfUnsupported(t, "key tracer (BTF, fentry/fexit, syscall tracepoints)", err)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// events reads this process's events until the marker with cookie.
func events(t *testing.T, tr *Tracer, cookie uint64) []Event {
	t.Helper()
	if err := tr.Marker(cookie); err != nil {
		t.Fatal(err)
	}
	var out []Event
	tr.SetDeadline(time.Now().Add(10 * time.Second))
	for {
		var e Event
		if err := tr.Read(&e); err != nil {
			t.Fatalf("Read: %v (after %d events)", err, len(out))
		}
		if e.TGID != uint32(os.Getpid()) {
			continue
		}
		if e.Kind == KindMarker {
			if e.Cookie() == cookie {
				return out
			}
			continue
		}
		out = append(out, e)
	}
}

func TestTracerSeesCalls(t *testing.T) {
	tr := openTracer(t)
	ring, err := unix.AddKey("keyring", "wq-kt-ring", nil, unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.KeyctlInt(unix.KEYCTL_UNLINK, ring, unix.KEY_SPEC_USER_KEYRING, 0, 0)
	k, err := unix.AddKey("user", "wq-kt-a", []byte("1"), ring)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.AddKey("user", "wq-kt-a", []byte("2"), ring); err != nil {
		t.Fatal(err)
	}
	unix.KeyctlInt(unix.KEYCTL_UNLINK, k, 12345678, 0, 0) // fails: nothing
	evs := events(t, tr, 1)
	var got []string
	for _, e := range evs {
		for _, r := range e.Records(nil, nil) {
			got = append(got, r.String())
		}
	}
	t.Logf("ring %d key %d: %q", ring, k, got)
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3 (add ring, add key, update key): %+v", len(evs), evs)
	}
	if evs[0].UID != 0 || evs[0].UserNS == 0 {
		t.Errorf("credentials not read: %+v", evs[0])
	}
	if evs[1].Ret != int64(k) || int32(evs[1].Args[3]) != int32(ring) || evs[2].Ret != int64(k) {
		t.Errorf("add_key events %+v", evs[1:])
	}
	if d, err := tr.Dropped(); err != nil || d != 0 {
		t.Errorf("Dropped = %d, %v", d, err)
	}
	if tr.Busy() {
		t.Errorf("Busy with no call in flight")
	}
	tr.Close()
	if err := tr.Read(&Event{}); !errors.Is(err, watchq.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

// TestTracerRingFull: a one-page ring holds about 34 events; 200 updates
// made while nobody reads lose the rest, and the next event carries the
// count.
func TestTracerRingFull(t *testing.T) {
	testenv.RequireRoot(t)
	tr, err := Open(Config{RingSize: os.Getpagesize()})
	testenv.SkipIfUnsupported(t, "key tracer", err)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	k, err := unix.AddKey("user", "wq-kt-full", []byte("1"), unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.KeyctlInt(unix.KEYCTL_UNLINK, k, unix.KEY_SPEC_USER_KEYRING, 0, 0)
	for range 200 {
		unix.KeyctlBuffer(unix.KEYCTL_UPDATE, k, []byte("2"), 0)
	}
	dropped, err := tr.Dropped()
	if err != nil || dropped == 0 {
		t.Fatalf("Dropped = %d, %v; want some", dropped, err)
	}
	// Drain the ring, then one more event: it carries the count.
	var seen int
	var e Event
	for {
		tr.SetDeadline(time.Now().Add(100 * time.Millisecond))
		if err := tr.Read(&e); err != nil {
			break
		}
		seen++
	}
	tr.Marker(8)
	tr.SetDeadline(time.Now().Add(5 * time.Second))
	for {
		if err := tr.Read(&e); err != nil {
			t.Fatal(err)
		}
		if e.Kind == KindMarker && e.Cookie() == 8 {
			break
		}
	}
	if e.Drops < dropped || seen == 0 {
		t.Errorf("read %d events; marker says %d dropped, Dropped said %d", seen, e.Drops, dropped)
	}
}
