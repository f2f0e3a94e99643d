package protocol

import (
	"errors"
	"syscall"
	"testing"
)

// TestServerStats: server-stats requests decode with their flags (unknown
// ones EINVAL), and replies round-trip, tolerating values a later daemon
// appends.
func TestServerStats(t *testing.T) {
	req, err := ParseRequest(OpServerStats, u32s(nil, StatsGC))
	if err != nil || req != (ServerStatsRequest{Flags: StatsGC}) {
		t.Fatalf("request: %v %v", req, err)
	}
	if _, err := ParseRequest(OpServerStats, u32s(nil, 2)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := ParseRequest(OpServerStats, nil); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("empty body: %v", err)
	}
	s := ServerStats{UID: 1001, Connections: 2, Queues: 3, Pages: 4, Watches: 5, MaxConnections: 6, MaxQueues: 7,
		MaxPages: 8, MaxWatches: 9, PublishRate: 10, PublishBurst: 11, Internal: true, Clients: 12, AllQueues: 13,
		AllPages: 14, AllWatches: 15, Users: 16, Goroutines: 17, Heap: 18, RSS: 19, FDs: 20, AcceptErrors: 21,
		Rejected: 22, TimedOut: 23, Throttled: 24, CloseLost: 25, MaxClients: 26, MaxAllQueues: 27, MaxAllPages: 28}
	b, _ := s.AppendBinary(nil)
	if got, err := ParseServerStats(b); err != nil || got != s {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// A later daemon's extra value.
	b[0]++
	b = append(b, make([]byte, 8)...)
	if got, err := ParseServerStats(b); err != nil || got != s {
		t.Errorf("with a value appended: %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, b[:len(b)-1], u32s(nil, 3, 0, 0, 0, 0, 0, 0)} {
		if _, err := ParseServerStats(bad); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%x: %v", bad, err)
		}
	}
	if OpServerStats.String() != "server-stats" {
		t.Errorf("op name %q", OpServerStats.String())
	}
}
