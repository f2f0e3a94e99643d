package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// Request is a decoded request body. Its concrete type tells the op.
type Request interface {
	// Op is the request's operation.
	Op() Op
	// AppendBinary appends the body's bytes.
	AppendBinary(b []byte) ([]byte, error)
}

// Hello opens a session: the client's protocol version.
type Hello struct{ Version uint32 }

// CreateQueue asks for a new queue. Size 0 leaves it unsized (SetSize
// later, once); any other size sizes it at once, as SetSize would.
//
// ReadSize (protocol version 2; the body is then 8 bytes, 4 without it)
// declares the size of the buffer the queue's reader passes to read(2).
// 0, or a 4-byte body, means a plain reader: one record per packet. Any
// other value lets the daemon pack whole records into packets of up to
// min(ReadSize, MaxPacket) bytes, as a notification pipe's read(2) with
// a buffer of that size returns them. A pipe2(O_DIRECT) pipe truncates a
// packet longer than the reader's buffer silently, so a reader must never
// declare more than it reads with.
type CreateQueue struct{ Size, ReadSize uint32 }

// SetSize sizes queue Queue to hold at least Notes records
// (IOC_WATCH_QUEUE_SET_SIZE); a second call is EBUSY.
type SetSize struct{ Queue, Notes uint32 }

// SetFilter installs Filter, the kernel's struct
// watch_notification_filter, on queue Queue; an empty Filter removes the
// queue's filter (IOC_WATCH_QUEUE_SET_FILTER with a NULL argument).
type SetFilter struct {
	Queue  uint32
	Filter []byte
}

// WatchDevices is watch_devices(2): Tag 0..255 watches the global device
// list, -1 removes the watch; Flags must be 0.
type WatchDevices struct {
	Queue uint32
	Tag   int32
	Flags uint32
}

// WatchPublisher watches publisher type Type with Tag 0..255, or removes
// the watch with -1.
type WatchPublisher struct {
	Queue uint32
	Type  uint32
	Tag   int32
}

// WatchKey is KEYCTL_WATCH_KEY: Tag 0..255 watches key Key, -1 removes
// the watch. Key is a serial (> 0): the client resolves special ids (@s,
// @u...) in its own context (KEYCTL_GET_KEYRING_ID), as the kernel's
// lookup_user_key would in the caller's.
type WatchKey struct {
	Queue uint32
	Key   int32
	Tag   int32
}

// Publish posts Record, one whole record of a publisher type.
type Publish struct{ Record []byte }

// StatsRequest asks for the daemon's counters and queue entries from
// Offset on: the queues of the caller's uid, or every queue for root.
// Flags (StatsCounters) asks for more; a request without flags is the
// original 4-byte body, one with flags 8 bytes.
type StatsRequest struct{ Offset, Flags uint32 }

// CloseQueue closes queue Queue: its watches go and its pipe's write end
// is closed, so the reader sees end of file.
type CloseQueue struct{ Queue uint32 }

// ServerStatsRequest asks for the caller's usage and limits and, for
// root, the daemon's internal counters. Flags is a set of
// ServerStats flags.
type ServerStatsRequest struct{ Flags uint32 }

// ServerStatsRequest flags.
const (
	// StatsGC asks the daemon to collect garbage (and return freed
	// memory to the system) before it measures its heap: root only,
	// EPERM for anyone else.
	StatsGC uint32 = 1 << iota

	statsFlags = StatsGC // every flag defined
)

// Op implements Request.
func (Hello) Op() Op              { return OpHello }
func (CreateQueue) Op() Op        { return OpCreateQueue }
func (SetSize) Op() Op            { return OpSetSize }
func (SetFilter) Op() Op          { return OpSetFilter }
func (WatchDevices) Op() Op       { return OpWatchDevices }
func (WatchPublisher) Op() Op     { return OpWatchPublisher }
func (Publish) Op() Op            { return OpPublish }
func (StatsRequest) Op() Op       { return OpStats }
func (CloseQueue) Op() Op         { return OpCloseQueue }
func (ServerStatsRequest) Op() Op { return OpServerStats }
func (WatchKey) Op() Op           { return OpWatchKey }

func u32s(b []byte, vs ...uint32) []byte {
	for _, v := range vs {
		b = binary.NativeEndian.AppendUint32(b, v)
	}
	return b
}

// AppendBinary implements Request.
func (m Hello) AppendBinary(b []byte) ([]byte, error) { return u32s(b, m.Version), nil }
func (m CreateQueue) AppendBinary(b []byte) ([]byte, error) {
	if m.ReadSize == 0 {
		return u32s(b, m.Size), nil // the version 1 body
	}
	return u32s(b, m.Size, m.ReadSize), nil
}
func (m SetSize) AppendBinary(b []byte) ([]byte, error) { return u32s(b, m.Queue, m.Notes), nil }
func (m SetFilter) AppendBinary(b []byte) ([]byte, error) {
	return append(u32s(b, m.Queue), m.Filter...), nil
}
func (m WatchDevices) AppendBinary(b []byte) ([]byte, error) {
	return u32s(b, m.Queue, uint32(m.Tag), m.Flags), nil
}
func (m WatchPublisher) AppendBinary(b []byte) ([]byte, error) {
	return u32s(b, m.Queue, m.Type, uint32(m.Tag)), nil
}
func (m Publish) AppendBinary(b []byte) ([]byte, error) { return append(b, m.Record...), nil }
func (m StatsRequest) AppendBinary(b []byte) ([]byte, error) {
	if m.Flags == 0 {
		return u32s(b, m.Offset), nil
	}
	return u32s(b, m.Offset, m.Flags), nil
}
func (m CloseQueue) AppendBinary(b []byte) ([]byte, error) { return u32s(b, m.Queue), nil }
func (m ServerStatsRequest) AppendBinary(b []byte) ([]byte, error) {
	return u32s(b, m.Flags), nil
}
func (m WatchKey) AppendBinary(b []byte) ([]byte, error) {
	return u32s(b, m.Queue, uint32(m.Key), uint32(m.Tag)), nil
}

// fixed checks that body is exactly n bytes and returns its n/4 words.
func fixed(op Op, body []byte, n int) ([]uint32, error) {
	if len(body) != n {
		return nil, errInval("%v body is %d bytes, want %d", op, len(body), n)
	}
	w := make([]uint32, n/4)
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(body[4*i:])
	}
	return w, nil
}

// ParseRequest decodes the body of a request with op. An unknown op is
// EOPNOTSUPP; a body of the wrong size, or a field out of range, EINVAL.
// SetFilter's filter and Publish's record are checked here as far as the
// protocol goes (sizes); the daemon then validates them as the kernel
// would (record.ParseFilter, record.ParsePublished).
func ParseRequest(op Op, body []byte) (Request, error) {
	switch op {
	case OpHello:
		w, err := fixed(op, body, 4)
		if err != nil {
			return nil, err
		}
		return Hello{Version: w[0]}, nil
	case OpCreateQueue:
		if len(body) == 8 { // version 2: size, read size
			w, _ := fixed(op, body, 8)
			if w[1] == 0 {
				return nil, errInval("%v: read size 0 in an 8-byte body; send the 4-byte body for a plain reader", op)
			}
			return CreateQueue{Size: w[0], ReadSize: w[1]}, nil
		}
		w, err := fixed(op, body, 4)
		if err != nil {
			return nil, err
		}
		return CreateQueue{Size: w[0]}, nil
	case OpSetSize:
		w, err := fixed(op, body, 8)
		if err != nil {
			return nil, err
		}
		return SetSize{Queue: w[0], Notes: w[1]}, nil
	case OpSetFilter:
		if len(body) < 4 {
			return nil, errInval("%v body is %d bytes, want at least 4", op, len(body))
		}
		f := body[4:]
		if max := record.FilterHeaderSize + record.MaxFilters*record.FilterEntrySize; len(f) > max {
			return nil, errInval("filter of %d bytes is longer than the largest valid filter (%d)", len(f), max)
		}
		return SetFilter{Queue: binary.NativeEndian.Uint32(body), Filter: append([]byte(nil), f...)}, nil
	case OpWatchDevices:
		w, err := fixed(op, body, 12)
		if err != nil {
			return nil, err
		}
		return WatchDevices{Queue: w[0], Tag: int32(w[1]), Flags: w[2]}, nil
	case OpWatchPublisher:
		w, err := fixed(op, body, 12)
		if err != nil {
			return nil, err
		}
		return WatchPublisher{Queue: w[0], Type: w[1], Tag: int32(w[2])}, nil
	case OpPublish:
		if _, err := record.ParsePublished(body); err != nil {
			return nil, err
		}
		return Publish{Record: append([]byte(nil), body...)}, nil
	case OpStats:
		if len(body) == 8 {
			w, _ := fixed(op, body, 8)
			if w[1] == 0 || w[1]&^statsRequestFlags != 0 {
				return nil, errInval("%v: flags %#x: want a set of %#x (no flags: the 4-byte body)", op, w[1], statsRequestFlags)
			}
			return StatsRequest{Offset: w[0], Flags: w[1]}, nil
		}
		w, err := fixed(op, body, 4)
		if err != nil {
			return nil, err
		}
		return StatsRequest{Offset: w[0]}, nil
	case OpCloseQueue:
		w, err := fixed(op, body, 4)
		if err != nil {
			return nil, err
		}
		return CloseQueue{Queue: w[0]}, nil
	case OpServerStats:
		w, err := fixed(op, body, 4)
		if err != nil {
			return nil, err
		}
		if w[0]&^statsFlags != 0 {
			return nil, errInval("%v: unknown flags %#x", op, w[0]&^statsFlags)
		}
		return ServerStatsRequest{Flags: w[0]}, nil
	case OpWatchKey:
		w, err := fixed(op, body, 12)
		if err != nil {
			return nil, err
		}
		if int32(w[1]) <= 0 {
			return nil, errInval("%v: key %d is not a serial (resolve special ids with KEYCTL_GET_KEYRING_ID first)", op, int32(w[1]))
		}
		return WatchKey{Queue: w[0], Key: int32(w[1]), Tag: int32(w[2])}, nil
	case OpWatchMount:
		q, tag, p, err := parsePathRequest(op, body)
		if err != nil {
			return nil, err
		}
		return WatchMount{Queue: q, Tag: tag, Path: p}, nil
	case OpWatchSuperblock:
		q, tag, p, err := parsePathRequest(op, body)
		if err != nil {
			return nil, err
		}
		return WatchSuperblock{Queue: q, Tag: tag, Path: p}, nil
	case OpCreateRing:
		return parseCreateRing(body)
	}
	return nil, &watchq.Errno{Errno: syscall.EOPNOTSUPP, Reason: fmt.Sprintf("unknown operation %d", uint16(op))}
}

// ErrnoOf returns the errno an error maps to and its reason: the errno of
// a *watchq.Errno, EACCES for a policy refusal, an errno the error wraps,
// or EIO.
func ErrnoOf(err error) (syscall.Errno, string) {
	var we *watchq.Errno
	if errors.As(err, &we) {
		return we.Errno, we.Reason
	}
	var pe *watchq.PermissionError
	if errors.As(err, &pe) {
		return syscall.EACCES, pe.Reason
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e, err.Error()
	}
	return syscall.EIO, err.Error()
}
