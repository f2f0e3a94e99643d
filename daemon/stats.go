package daemon

import (
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/source/device"
)

// deviceStatser is the device source's counters (*device.Source.Stats); a
// DeviceSource without them reports none.
type deviceStatser interface{ Stats() device.Stats }

// DeviceCounters names the device source's counters as stat and the
// metrics endpoint show them: one name per figure, everywhere.
func DeviceCounters(st device.Stats) []protocol.Counter {
	return []protocol.Counter{
		{Name: "uevents_received", Value: st.Received},
		{Name: "uevents_ignored", Value: st.Ignored},
		{Name: "uevents_malformed", Value: st.Malformed},
		{Name: "spoofed_dropped", Value: st.Spoofed},
		{Name: "truncated_dropped", Value: st.Truncated},
		{Name: "socket_overruns", Value: st.Overruns},
		{Name: "uevents_lost", Value: st.UeventsLost},
		{Name: "read_errors", Value: st.ReadErrors},
		{Name: "block_errors_received", Value: st.BlockErrors},
		{Name: "usb_resets_received", Value: st.USBResets},
		{Name: "ring_drops", Value: st.BPFDrops},
		{Name: "records_posted", Value: st.Posted},
	}
}

// Counters returns the sources' counters (kind GroupSource; the device
// source's while it runs) and what became of posted records by record
// class (GroupClass: posted, lost, filtered, denied, as per queue; the
// policy counts them, given as the engine's Config.Counter). They are the server's own counters, read
// afresh: stat's counters section and the metrics endpoint both come
// from here.
func (s *Server) Counters() []protocol.CounterGroup {
	gs := []protocol.CounterGroup{}
	if d, ok := s.cfg.Devices.(deviceStatser); ok {
		gs = append(gs, protocol.CounterGroup{Kind: protocol.GroupSource, Name: "device", Counters: DeviceCounters(d.Stats())})
	}
	for i, c := range s.cfg.Policy.Counts() {
		gs = append(gs, protocol.CounterGroup{Kind: protocol.GroupClass, Name: policy.ClassNames[i],
			Counters: []protocol.Counter{{Name: "posted", Value: c.Posted}, {Name: "lost", Value: c.Lost},
				{Name: "filtered", Value: c.Filtered}, {Name: "denied", Value: c.Denied}}})
	}
	return gs
}

// QueueStats returns every open queue's entry, as root's stat sees them.
func (s *Server) QueueStats() []protocol.QueueStats {
	var out []protocol.QueueStats
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		for _, q := range c.queues {
			out = append(out, q.stats())
		}
		c.mu.Unlock()
	}
	return out
}

// Usage is what one uid holds, charged by the accounting (account.go).
type Usage struct {
	UID                                 uint32
	Connections, Queues, Pages, Watches int
}

// Usages returns what every uid holding anything holds, in no order.
func (s *Server) Usages() []Usage {
	s.amu.Lock()
	defer s.amu.Unlock()
	var out []Usage
	for uid, a := range s.accounts {
		if a.conns+a.queues+a.pages+a.watches > 0 {
			out = append(out, Usage{UID: uid, Connections: a.conns, Queues: a.queues, Pages: a.pages, Watches: a.watches})
		}
	}
	return out
}
