package protocol

import (
	"encoding/binary"
	"strings"
)

// HelloReply is the daemon's answer to Hello: its version and the
// identity it sees for the client (SO_PEERCRED, SO_PEERGROUPS,
// SO_PEERSEC), which is what the policy rules on.
type HelloReply struct {
	Version  uint32
	UID, GID uint32
	PID      int32
	Groups   []uint32
	Label    string
}

// AppendBinary encodes r: version, uid, gid, pid, group count, groups,
// then the label to the end of the body.
func (r HelloReply) AppendBinary(b []byte) ([]byte, error) {
	b = u32s(b, r.Version, r.UID, r.GID, uint32(r.PID), uint32(len(r.Groups)))
	b = u32s(b, r.Groups...)
	return append(b, r.Label...), nil
}

// ParseHelloReply decodes a HelloReply.
func ParseHelloReply(b []byte) (HelloReply, error) {
	if len(b) < 20 {
		return HelloReply{}, errInval("hello reply of %d bytes", len(b))
	}
	ne := binary.NativeEndian
	r := HelloReply{Version: ne.Uint32(b), UID: ne.Uint32(b[4:]), GID: ne.Uint32(b[8:]), PID: int32(ne.Uint32(b[12:]))}
	n := ne.Uint32(b[16:])
	b = b[20:]
	if uint64(n)*4 > uint64(len(b)) {
		return HelloReply{}, errInval("hello reply: %d groups do not fit", n)
	}
	for i := uint32(0); i < n; i++ {
		r.Groups = append(r.Groups, ne.Uint32(b[4*i:]))
	}
	r.Label = string(b[4*n:])
	return r, nil
}

// QueueReply answers CreateQueue (with the pipe's read end attached as
// SCM_RIGHTS) and SetSize: the queue's id and its capacity in notes (0
// while unsized).
type QueueReply struct{ Queue, Capacity uint32 }

// AppendBinary encodes r.
func (r QueueReply) AppendBinary(b []byte) ([]byte, error) { return u32s(b, r.Queue, r.Capacity), nil }

// ParseQueueReply decodes a QueueReply.
func ParseQueueReply(b []byte) (QueueReply, error) {
	w, err := fixed(OpCreateQueue|ReplyFlag, b, 8)
	if err != nil {
		return QueueReply{}, err
	}
	return QueueReply{Queue: w[0], Capacity: w[1]}, nil
}

// Sources is a set of device record classes: what a watch on the device
// list actually delivers under the policy.
type Sources uint32

// Device record classes.
const (
	SourceUSB            Sources = 1 << iota // USB records (type 3)
	SourceBlockErrors                        // block error records (type 2, subtypes 1..10)
	SourceBlockLifecycle                     // block lifecycle records (type 2, other subtypes)

	// SourceDevices is every device record class.
	SourceDevices = SourceUSB | SourceBlockErrors | SourceBlockLifecycle
)

// String lists the classes as the configuration file names them.
func (s Sources) String() string {
	var parts []string
	if s&SourceUSB != 0 {
		parts = append(parts, "usb")
	}
	if s&SourceBlockErrors != 0 {
		parts = append(parts, "block-errors")
	}
	if s&SourceBlockLifecycle != 0 {
		parts = append(parts, "block-lifecycle")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// WatchReply answers WatchDevices: the classes of device records the
// policy lets through to this watcher (0 when the watch was removed).
type WatchReply struct{ Sources Sources }

// AppendBinary encodes r.
func (r WatchReply) AppendBinary(b []byte) ([]byte, error) { return u32s(b, uint32(r.Sources)), nil }

// ParseWatchReply decodes a WatchReply.
func ParseWatchReply(b []byte) (WatchReply, error) {
	w, err := fixed(OpWatchDevices|ReplyFlag, b, 4)
	if err != nil {
		return WatchReply{}, err
	}
	return WatchReply{Sources: Sources(w[0])}, nil
}

// QueueStats is one queue's entry in a Stats reply: the engine's
// watchq.QueueStats plus its owner and what the daemon wrote to its pipe.
type QueueStats struct {
	Queue    uint32 // id, unique within its connection
	PID      int32  // owner's pid
	UID      uint32 // owner's uid
	Capacity uint32
	Queued   uint32 // records waiting in the engine queue
	Watches  uint32
	Posted   uint64
	Lost     uint64
	Filtered uint64
	Denied   uint64
	Written  uint64 // records written to the pipe
}

// queueStatsSize is the encoded size of a QueueStats.
const queueStatsSize = 6*4 + 5*8

// Stats answers StatsRequest: daemon-wide counters and a page of queue
// entries.
type Stats struct {
	Clients   uint32 // connected clients
	Queues    uint32 // open queues (all clients)
	Total     uint32 // queue entries visible to the caller
	Devices   uint32 // 1 when the device source runs
	Published uint64 // records accepted from publishers
	Refused   uint64 // requests the policy refused
	Entries   []QueueStats
	// Counters is the counters section, present when the request asked
	// for it (StatsCounters): nil otherwise. A daemon sends it only then,
	// so a client that never asks parses every reply as before.
	Counters []CounterGroup
}

// AppendBinary encodes s: the fixed part, the entries and, when
// s.Counters is not nil, the counters section.
func (s Stats) AppendBinary(b []byte) ([]byte, error) {
	ne := binary.NativeEndian
	b = u32s(b, s.Clients, s.Queues, s.Total, s.Devices, uint32(len(s.Entries)))
	b = ne.AppendUint64(ne.AppendUint64(b, s.Published), s.Refused)
	for _, q := range s.Entries {
		b = u32s(b, q.Queue, uint32(q.PID), q.UID, q.Capacity, q.Queued, q.Watches)
		for _, v := range [...]uint64{q.Posted, q.Lost, q.Filtered, q.Denied, q.Written} {
			b = ne.AppendUint64(b, v)
		}
	}
	if s.Counters != nil {
		b = appendCounters(b, s.Counters)
	}
	return b, nil
}

// ParseStats decodes a Stats reply; bytes after the entries are the
// counters section.
func ParseStats(b []byte) (Stats, error) {
	ne := binary.NativeEndian
	if len(b) < 36 {
		return Stats{}, errInval("stats reply of %d bytes", len(b))
	}
	s := Stats{Clients: ne.Uint32(b), Queues: ne.Uint32(b[4:]), Total: ne.Uint32(b[8:]), Devices: ne.Uint32(b[12:])}
	n := ne.Uint32(b[16:])
	s.Published, s.Refused = ne.Uint64(b[20:]), ne.Uint64(b[28:])
	b = b[36:]
	if uint64(n)*queueStatsSize > uint64(len(b)) {
		return Stats{}, errInval("stats reply: %d entries in %d bytes", n, len(b))
	}
	if rest := b[int(n)*queueStatsSize:]; len(rest) > 0 {
		gs, err := parseCounters(rest)
		if err != nil {
			return Stats{}, err
		}
		s.Counters = gs
	}
	for b = b[:int(n)*queueStatsSize]; len(b) > 0; b = b[queueStatsSize:] {
		q := QueueStats{Queue: ne.Uint32(b), PID: int32(ne.Uint32(b[4:])), UID: ne.Uint32(b[8:]),
			Capacity: ne.Uint32(b[12:]), Queued: ne.Uint32(b[16:]), Watches: ne.Uint32(b[20:])}
		v := b[24:]
		q.Posted, q.Lost, q.Filtered, q.Denied, q.Written = ne.Uint64(v), ne.Uint64(v[8:]), ne.Uint64(v[16:]), ne.Uint64(v[24:]), ne.Uint64(v[32:])
		s.Entries = append(s.Entries, q)
	}
	return s, nil
}

// ServerStats answers ServerStatsRequest: the caller's uid, what it holds
// and its limits (see docs/security.md), and for root the daemon's
// internals (Internal is then true; for anyone else those fields are 0).
//
// On the wire it is a u32 count n and n u64 values in the order of the
// fields below; a parser takes the values it knows and ignores any that a
// later daemon appends.
type ServerStats struct {
	UID uint32
	// What the caller's uid holds.
	Connections, Queues, Pages, Watches uint64
	// The caller's limits (this connection's, for a uid whose
	// connections differ in groups or label).
	MaxConnections, MaxQueues, MaxPages, MaxWatches, PublishRate, PublishBurst uint64

	// Internal: the fields below are filled in (root only).
	Internal bool
	// Daemon-wide: connections, queues, pages and watches charged, uids
	// holding any of them.
	Clients, AllQueues, AllPages, AllWatches, Users uint64
	// The daemon process: goroutines, Go heap in use (HeapAlloc), resident
	// set size and open file descriptors.
	Goroutines, Heap, RSS, FDs uint64
	// Events: accept errors (each backed off), connections refused at a
	// limit, connections closed for a deadline (hello or reply), publishes
	// refused for rate, records that could not reach a pipe when its queue
	// closed.
	AcceptErrors, Rejected, TimedOut, Throttled, CloseLost uint64
	// The daemon-wide bounds in force: connections, queues, pages.
	MaxClients, MaxAllQueues, MaxAllPages uint64

	// KeyBackend is the backend of the daemon's key source, which
	// WatchKey uses: one of the KeyBackend constants (everyone sees it).
	// A reply from a daemon without the field parses as KeyBackendNone.
	KeyBackend uint64
}

// ServerStats.KeyBackend values; the numbers are source/keys.Backend's.
const (
	KeyBackendNone   = 0 // no key source: WatchKey is ENODEV
	KeyBackendKernel = 1 // the kernel's own facility
	KeyBackendPoll   = 2 // /proc/keys polling
	KeyBackendTraced = 3 // BPF on the key system calls
)

// serverStatsOptional is how many of the last fields a reply may lack:
// those added after the first daemons (KeyBackend).
const serverStatsOptional = 1

// fields lists s's values in wire order.
func (s *ServerStats) fields() []*uint64 {
	var uid, internal uint64
	return []*uint64{&uid, &s.Connections, &s.Queues, &s.Pages, &s.Watches,
		&s.MaxConnections, &s.MaxQueues, &s.MaxPages, &s.MaxWatches, &s.PublishRate, &s.PublishBurst,
		&internal, &s.Clients, &s.AllQueues, &s.AllPages, &s.AllWatches, &s.Users,
		&s.Goroutines, &s.Heap, &s.RSS, &s.FDs,
		&s.AcceptErrors, &s.Rejected, &s.TimedOut, &s.Throttled, &s.CloseLost,
		&s.MaxClients, &s.MaxAllQueues, &s.MaxAllPages,
		&s.KeyBackend}
}

// AppendBinary encodes s.
func (s ServerStats) AppendBinary(b []byte) ([]byte, error) {
	fs := s.fields()
	*fs[0] = uint64(s.UID)
	if s.Internal {
		*fs[11] = 1
	}
	b = u32s(b, uint32(len(fs)))
	for _, f := range fs {
		b = binary.NativeEndian.AppendUint64(b, *f)
	}
	return b, nil
}

// ParseServerStats decodes a ServerStats reply.
func ParseServerStats(b []byte) (ServerStats, error) {
	var s ServerStats
	if len(b) < 4 {
		return s, errInval("server-stats reply of %d bytes", len(b))
	}
	n := binary.NativeEndian.Uint32(b)
	b = b[4:]
	if uint64(n)*8 != uint64(len(b)) {
		return s, errInval("server-stats reply: %d values in %d bytes", n, len(b))
	}
	fs := s.fields()
	if int(n) < len(fs)-serverStatsOptional {
		return s, errInval("server-stats reply: %d values, want at least %d", n, len(fs)-serverStatsOptional)
	}
	for i, f := range fs[:min(int(n), len(fs))] {
		*f = binary.NativeEndian.Uint64(b[8*i:])
	}
	s.UID = uint32(*fs[0])
	s.Internal = *fs[11] != 0
	return s, nil
}
