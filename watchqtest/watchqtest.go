// Package watchqtest helps test code that consumes or produces watchq
// records, against the real engine, as mdlayher/netlink's nltest does for
// netlink: sized queues that close themselves, readers that collect or
// assert records with timeouts (for an engine queue or a client's queue),
// record builders, a device source a test posts to, and an in-process
// watchqd for testing clients. watchq's own tests use it.
package watchqtest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// Queue returns a queue sized to notes, closed when the test ends.
func Queue(tb testing.TB, notes int, opts ...watchq.QueueOption) *watchq.Queue {
	tb.Helper()
	q := watchq.NewQueue(opts...)
	if _, err := q.SetSize(notes); err != nil {
		tb.Fatalf("watchqtest: SetSize(%d): %v", notes, err)
	}
	tb.Cleanup(func() { q.Close() })
	return q
}

// Drain returns every record queued now, without blocking.
func Drain(tb testing.TB, q *watchq.Queue) []record.Record {
	tb.Helper()
	var out []record.Record
	buf := make([]byte, 4096)
	for {
		n, err := q.TryRead(buf)
		if errors.Is(err, watchq.ErrWouldBlock) {
			return out
		}
		if err != nil {
			tb.Fatalf("watchqtest: TryRead: %v", err)
		}
		out = append(out, split(tb, buf[:n])...)
	}
}

// Collect blocks until n records have been read from r (an engine queue,
// a client queue) or timeout passes, and fails the test in the latter case.
func Collect(tb testing.TB, r record.Reader, n int, timeout time.Duration) []record.Record {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []record.Record
	for len(out) < n {
		rec, err := r.Next(ctx)
		if err != nil {
			tb.Fatalf("watchqtest: after %d of %d records: %v", len(out), n, err)
		}
		out = append(out, rec)
	}
	return out
}

// Timeout is how long Expect waits for the records it expects.
const Timeout = 10 * time.Second

// Expect reads len(want) records from r and fails the test, naming each
// difference, unless they are want byte for byte, in order. Build want with
// Rec. It waits at most Timeout.
func Expect(tb testing.TB, r record.Reader, want ...[]byte) {
	tb.Helper()
	got := Collect(tb, r, len(want), Timeout)
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			tb.Errorf("watchqtest: record %d is %v (% x), want %v (% x)", i, got[i], []byte(got[i]), record.Record(want[i]), want[i])
		}
	}
}

// Quiet fails the test if any record arrives from r within d.
func Quiet(tb testing.TB, r record.Reader, d time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if r, err := r.Next(ctx); err == nil {
		tb.Fatalf("watchqtest: unexpected record %v", r)
	}
}

// Rec encodes a typed record (record.KeyNotification, USBNotification,
// BlockNotification, Removal, Loss, Header) into a new buffer.
func Rec(v interface{ AppendBinary([]byte) ([]byte, error) }) []byte {
	b, err := v.AppendBinary(make([]byte, 0, record.NoteSize))
	if err != nil {
		panic(err)
	}
	return b
}

func split(tb testing.TB, b []byte) []record.Record {
	tb.Helper()
	var out []record.Record
	for r, err := range record.Records(b) {
		if err != nil {
			tb.Fatalf("watchqtest: malformed read: %v", err)
		}
		out = append(out, append(record.Record(nil), r...))
	}
	return out
}
