package protocol

import (
	"errors"
	"reflect"
	"syscall"
	"testing"
)

// TestStatsCounters: a stats request with flags is the 8-byte body (no
// flags the old 4-byte one, unknown flags EINVAL), and the counters
// section round-trips after the entries, while a reply without it parses
// as before.
func TestStatsCounters(t *testing.T) {
	for _, tc := range []struct {
		body []byte
		want Request
	}{
		{u32s(nil, 3), StatsRequest{Offset: 3}},
		{u32s(nil, 3, StatsCounters), StatsRequest{Offset: 3, Flags: StatsCounters}},
	} {
		got, err := ParseRequest(OpStats, tc.body)
		if err != nil || got != tc.want {
			t.Errorf("%x: %+v %v, want %+v", tc.body, got, err, tc.want)
		}
	}
	for _, bad := range [][]byte{u32s(nil, 3, 0), u32s(nil, 3, 2), u32s(nil, 3, 1, 0), nil} {
		if _, err := ParseRequest(OpStats, bad); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%x: %v, want EINVAL", bad, err)
		}
	}
	s := Stats{Clients: 2, Queues: 1, Total: 1, Entries: []QueueStats{{Queue: 9, UID: 1000, Posted: 4}},
		Counters: []CounterGroup{
			{Kind: GroupSource, Name: "device", Counters: []Counter{{"uevents_received", 10}, {"ring_drops", 2}}},
			{Kind: GroupClass, Name: "publisher", Counters: []Counter{{"allowed", 1}, {"denied", 0}}},
		}}
	b, _ := s.AppendBinary(nil)
	got, err := ParseStats(b)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if v, ok := got.Counters[0].Value("ring_drops"); !ok || v != 2 {
		t.Errorf("Value(ring_drops) = %d, %v", v, ok)
	}
	s.Counters = nil
	b, _ = s.AppendBinary(nil)
	if got, err := ParseStats(b); err != nil || got.Counters != nil || len(got.Entries) != 1 {
		t.Errorf("without counters: %+v %v", got, err)
	}
	for _, cut := range []int{1, 8, 9} {
		full, _ := Stats{Counters: []CounterGroup{{Kind: GroupSource, Name: "device", Counters: []Counter{{"x", 1}}}}}.AppendBinary(nil)
		if _, err := ParseStats(full[:len(full)-cut]); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("cut by %d: %v, want EINVAL", cut, err)
		}
	}
}
