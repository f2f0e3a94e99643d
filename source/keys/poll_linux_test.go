//go:build linux

package keys

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
)

// openBackend opens a key source on backend b (an hour's poll interval,
// notes pipe notes for the kernel backend: 0 is the default) and a queue of
// size notes, both closed when tb ends.
func openBackend(tb testing.TB, b Backend, notes, size int) (*Source, *watchq.Queue) {
	tb.Helper()
	src, err := Open(context.Background(), Config{Engine: watchq.NewEngine(watchq.Config{}), Backend: b, Interval: time.Hour, PipeNotes: notes})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { src.Close() })
	q := watchq.NewQueue()
	if _, err := q.SetSize(size); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { q.Close() })
	return src, q
}

func openPoll(t *testing.T) (*Source, *watchq.Queue) {
	t.Helper()
	testenv.RequireFile(t, "/proc/keys")
	return openBackend(t, Poll, 0, 256)
}

// TestPollScenario runs the keyutils-style sequence through the poll
// backend on this machine's kernel, checking every record and the
// documented differences from the kernel backend.
func TestPollScenario(t *testing.T) {
	src, q := openPoll(t)
	// keyutils' /etc/request-key.conf constructs "debug:loop:*" user keys
	// with |/bin/cat: the request_key step needs it.
	_, err := os.Stat("/sbin/request-key")
	sc := newScenario(t, src, q)
	sc.run(err == nil)
	for _, l := range sc.log {
		t.Log(l)
	}
	if err != nil {
		testenv.Skip(t, "request_key upcall step not run: %v (install keyutils)", err)
	}
}
