package protocol

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"syscall"
	"testing"

	"github.com/watchq/watchq"
)

// parseResult decodes a success reply's result for op the way package
// client does, and re-encodes it; ok is false for ops whose result the
// client does not decode (empty results).
func parseResult(op Op, b []byte) (v any, re []byte, ok bool, err error) {
	var enc interface{ AppendBinary([]byte) ([]byte, error) }
	switch op {
	case OpHello:
		r, e := ParseHelloReply(b)
		v, enc, err = r, r, e
	case OpCreateQueue, OpSetSize:
		r, e := ParseQueueReply(b)
		v, enc, err = r, r, e
	case OpCreateRing:
		r, e := ParseRingReply(b)
		v, enc, err = r, r, e
	case OpWatchDevices:
		r, e := ParseWatchReply(b)
		v, enc, err = r, r, e
	case OpStats:
		r, e := ParseStats(b)
		v, enc, err = r, r, e
	case OpWatchMount, OpWatchSuperblock:
		r, e := ParseMountWatchReply(b)
		if e == nil && len(b) == 0 {
			return r, nil, true, nil // a removal's empty reply
		}
		v, enc, err = r, r, e
	default:
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, true, err
	}
	re, err = enc.AppendBinary(nil)
	return v, re, true, err
}

// replySeed is one of FuzzReply's seeds, committed as well (frozen bytes)
// as testdata/fuzz/FuzzReply/<name>.
type replySeed struct {
	name string
	pkt  []byte
}

// replySeeds are a success reply to every request whose result the client
// decodes, error replies, and malformed ones.
func replySeeds() []replySeed {
	hello, _ := HelloReply{Version: 1, UID: 1000, GID: 1000, PID: 4242, Groups: []uint32{4, 27}, Label: "unconfined"}.AppendBinary(nil)
	queue, _ := QueueReply{Queue: 3, Capacity: 64}.AppendBinary(nil)
	ring, _ := RingReply{Queue: 4, Capacity: 512, Pages: 16}.AppendBinary(nil)
	watch, _ := WatchReply{Sources: SourceBlockErrors | SourceUSB}.AppendBinary(nil)
	stats, _ := Stats{Clients: 2, Queues: 1, Total: 1, Devices: 1, Published: 9, Refused: 1,
		Entries: []QueueStats{{Queue: 1, PID: 77, UID: 1000, Capacity: 64, Queued: 2, Watches: 1, Posted: 5, Lost: 1, Filtered: 1, Denied: 0, Written: 3}}}.AppendBinary(nil)
	mountOK, _ := MountWatchReply{}.AppendBinary(nil)
	mountNoFS, _ := MountWatchReply{Flags: MountNoFSErrors, Reason: "fanotify_mark(FAN_MARK_FILESYSTEM, FAN_FS_ERROR): operation not supported"}.AppendBinary(nil)
	counters, _ := Stats{Clients: 1, Queues: 1, Total: 1, Devices: 1,
		Entries: []QueueStats{{Queue: 1, PID: 78, UID: 1000, Capacity: 64, Posted: 5}},
		Counters: []CounterGroup{
			{Kind: GroupSource, Name: "device", Counters: []Counter{{"uevents_received", 7}, {"spoofed_dropped", 1}}},
			{Kind: GroupClass, Name: "usb", Counters: []Counter{{"allowed", 3}, {"denied", 2}}},
		}}.AppendBinary(nil)
	return []replySeed{
		{"stats-counters", AppendReply(nil, OpStats, 14, counters, nil)},
		{"stats-counters-cut", AppendReply(nil, OpStats, 15, counters[:len(counters)-3], nil)},
		{"hello", AppendReply(nil, OpHello, 1, hello, nil)},
		{"create-queue", AppendReply(nil, OpCreateQueue, 2, queue, nil)},
		{"set-size", AppendReply(nil, OpSetSize, 3, queue, nil)},
		{"watch-devices", AppendReply(nil, OpWatchDevices, 4, watch, nil)},
		{"stats", AppendReply(nil, OpStats, 5, stats, nil)},
		{"publish", AppendReply(nil, OpPublish, 6, nil, nil)},
		{"stats-eproto", AppendReply(nil, OpStats, 7, nil, &watchq.Errno{Errno: syscall.EPROTO, Reason: "stats before hello: send hello first"})},
		{"watch-publisher-eacces", AppendReply(nil, OpWatchPublisher, 8, nil, &watchq.PermissionError{Reason: "uid 1000 may not watch 0x800001"})},
		{"set-filter-einval", AppendReply(nil, OpSetFilter, 9, nil, &watchq.Errno{Errno: syscall.EINVAL, Reason: "filter entry 0: type 0x0 out of range"})},
		{"no-errno", AppendMessage(nil, OpHello|ReplyFlag, 10, []byte{0, 0})},
		{"short-hello", AppendReply(nil, OpHello, 11, hello[:19], nil)},
		{"hello-too-many-groups", AppendReply(nil, OpHello, 12, append(hello[:16:16], 0xff, 0xff, 0xff, 0x7f), nil)},
		{"stats-entries-mismatch", AppendReply(nil, OpStats, 13, stats[:len(stats)-1], nil)},
		{"watch-mount", AppendReply(nil, OpWatchMount, 14, mountOK, nil)},
		{"watch-sb-no-fs-errors", AppendReply(nil, OpWatchSuperblock, 15, mountNoFS, nil)},
		{"watch-mount-removed", AppendReply(nil, OpWatchMount, 16, nil, nil)},
		{"create-ring", AppendReply(nil, OpCreateRing, 17, ring, nil)},
		{"create-ring-bad-pages", AppendReply(nil, OpCreateRing, 18, ring[:8:8], nil)},
	}
}

// FuzzReply feeds arbitrary packets to the client's side of the protocol:
// ParseMessage, ParseReply and the result decoder of the reply's op must
// never panic, every failure must carry an errno and a reason, a decoded
// result must re-encode to the same bytes, and the whole reply must
// re-encode (AppendReply) to the packet.
func FuzzReply(f *testing.F) {
	for _, s := range replySeeds() {
		f.Add(s.pkt)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, body, err := ParseMessage(b)
		if err != nil {
			checkErrno(t, err)
			return
		}
		errno, rest, err := ParseReply(body)
		if err != nil {
			checkErrno(t, err)
			return
		}
		op := h.Op &^ ReplyFlag
		var rerr error
		if errno != 0 {
			rerr = &watchq.Errno{Errno: errno, Reason: string(rest)}
		}
		if h.Op&ReplyFlag != 0 {
			if re := AppendReply(nil, op, h.ID, rest, rerr); !bytes.Equal(re, b) {
				t.Fatalf("reply %x re-encodes as %x", b, re)
			}
		}
		if errno != 0 {
			return
		}
		v, re, ok, err := parseResult(op, rest)
		if !ok {
			return
		}
		if err != nil {
			checkErrno(t, err)
			return
		}
		if !bytes.Equal(re, rest) {
			t.Fatalf("%v result %x decodes to %+v, re-encodes as %x", op, rest, v, re)
		}
	})
}

// FuzzReplyEncode builds replies from arbitrary field values: whatever the
// daemon encodes, the client decodes back to the same values.
func FuzzReplyEncode(f *testing.F) {
	f.Add(uint32(1), uint32(1000), uint32(1000), int32(4242), []byte{4, 0, 0, 0, 27, 0, 0, 0}, "unconfined", uint32(3), uint32(64), []byte{})
	f.Add(uint32(0), uint32(0), uint32(0), int32(-1), []byte{}, "", uint32(0), uint32(0), make([]byte, 3*queueStatsSize))
	f.Fuzz(func(t *testing.T, version, uid, gid uint32, pid int32, groups []byte, label string, q, capacity uint32, entries []byte) {
		ne := binary.NativeEndian
		hr := HelloReply{Version: version, UID: uid, GID: gid, PID: pid, Label: label}
		for i := 0; i+4 <= len(groups); i += 4 {
			hr.Groups = append(hr.Groups, ne.Uint32(groups[i:]))
		}
		b, _ := hr.AppendBinary(nil)
		got, err := ParseHelloReply(b)
		if err != nil || !reflect.DeepEqual(got, hr) {
			t.Fatalf("hello reply %+v: encoded %x, decoded %+v, %v", hr, b, got, err)
		}

		qr := QueueReply{Queue: q, Capacity: capacity}
		b, _ = qr.AppendBinary(nil)
		if got, err := ParseQueueReply(b); err != nil || got != qr {
			t.Fatalf("queue reply %+v: decoded %+v, %v", qr, got, err)
		}
		wr := WatchReply{Sources: Sources(capacity)}
		b, _ = wr.AppendBinary(nil)
		if got, err := ParseWatchReply(b); err != nil || got != wr {
			t.Fatalf("watch reply %+v: decoded %+v, %v", wr, got, err)
		}

		s := Stats{Clients: version, Queues: uid, Total: gid, Devices: q, Published: uint64(capacity) << 7, Refused: uint64(uid) * 3}
		for ; len(entries) >= queueStatsSize; entries = entries[queueStatsSize:] {
			e := entries
			s.Entries = append(s.Entries, QueueStats{Queue: ne.Uint32(e), PID: int32(ne.Uint32(e[4:])), UID: ne.Uint32(e[8:]),
				Capacity: ne.Uint32(e[12:]), Queued: ne.Uint32(e[16:]), Watches: ne.Uint32(e[20:]), Posted: ne.Uint64(e[24:]),
				Lost: ne.Uint64(e[32:]), Filtered: ne.Uint64(e[40:]), Denied: ne.Uint64(e[48:]), Written: ne.Uint64(e[56:])})
		}
		b, _ = s.AppendBinary(nil)
		gs, err := ParseStats(b)
		if err != nil || !reflect.DeepEqual(gs, s) {
			t.Fatalf("stats %+v: decoded %+v, %v", s, gs, err)
		}
		// With a counters section whose names come from label.
		if n := min(len(label), MaxCounterNameLen); n > 0 {
			s.Counters = []CounterGroup{{Kind: uint8(q), Name: label[:n], Counters: []Counter{{label[:n], uint64(pid)}}}, {Kind: GroupClass, Name: "x"}}
			bc, _ := s.AppendBinary(nil)
			gs, err := ParseStats(bc)
			if err != nil || !reflect.DeepEqual(gs, s) {
				t.Fatalf("stats with counters %+v: decoded %+v, %v", s, gs, err)
			}
		}

		// The whole reply, through the client's path.
		var rerr error
		if version%3 == 1 {
			rerr = &watchq.Errno{Errno: syscall.Errno(uid), Reason: label}
		}
		msg := AppendReply(nil, OpHello, gid, b, rerr)
		h, body, err := ParseMessage(msg)
		if err != nil || h.Op != OpHello|ReplyFlag || h.ID != gid {
			t.Fatalf("reply header %+v, %v", h, err)
		}
		errno, rest, err := ParseReply(body)
		switch {
		case err != nil:
			t.Fatal(err)
		case rerr == nil && (errno != 0 || !bytes.Equal(rest, b)):
			t.Fatalf("success reply decoded as errno %d, %x", errno, rest)
		case rerr != nil && (errno != syscall.Errno(uid) || string(rest) != label):
			t.Fatalf("error reply decoded as errno %d, %q", errno, rest)
		}
	})
}
