// Package watchqtest helps test code that consumes or produces watchq
// records, against the real engine: sized queues that close themselves,
// draining and collecting with timeouts, and record builders.
package watchqtest

import (
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

// Collect blocks until n records have been read or timeout passes, and
// fails the test in the latter case.
func Collect(tb testing.TB, q *watchq.Queue, n int, timeout time.Duration) []record.Record {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []record.Record
	for len(out) < n {
		r, err := q.Next(ctx)
		if err != nil {
			tb.Fatalf("watchqtest: after %d of %d records: %v", len(out), n, err)
		}
		out = append(out, r)
	}
	return out
}

// Quiet fails the test if any record arrives within d.
func Quiet(tb testing.TB, q *watchq.Queue, d time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if r, err := q.Next(ctx); err == nil {
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
