// Package protocol is watchqd's control protocol: the messages a client and
// the daemon exchange over a SOCK_SEQPACKET Unix socket, their byte layout
// and their validation. docs/protocol.md is the reference; this package is
// its only implementation, shared by the daemon and package client.
//
// Every message is one packet: a 12-byte header (op, flags, request id,
// body length) followed by the body. Integers are in host byte order, as
// the kernel's own structures (the filter a client passes in SetFilter is
// struct watch_notification_filter, byte for byte). A reply carries the
// request's op with ReplyFlag set, the request's id, and a body that starts
// with a 4-byte errno (0 for success); an error reply continues with a
// human-readable reason, a success reply with the op's result.
package protocol

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/watchq/watchq"
)

// DefaultSocket is where watchqd listens, and clients dial, unless
// configured otherwise.
const DefaultSocket = "/run/watchq/watchqd.sock"

// Version is the protocol version this package speaks. A client states
// its version in Hello; the daemon speaks every version from MinVersion to
// Version and refuses others with EPROTONOSUPPORT. Version 2 adds
// CreateQueue.ReadSize (packed delivery).
const Version = 2

// MinVersion is the oldest protocol version the daemon still speaks.
const MinVersion = 1

// Sizes and limits, in bytes.
const (
	HeaderSize = 12 // op u16, flags u16, id u32, len u32
	// MaxRequest is the largest request the daemon accepts: a
	// WatchMount or WatchSuperblock with a path of MaxPath bytes is
	// 12+8+4095 = 4115 bytes (a SetFilter with 16 entries, 728). Larger
	// ones are EMSGSIZE.
	MaxRequest = 4160
	// MaxReply is the largest reply the daemon sends.
	MaxReply = 16384
	// MaxStatsQueues is the most queue entries one Stats reply holds;
	// clients page with StatsRequest.Offset.
	MaxStatsQueues = 200
	// MaxPacket is the largest packet the daemon writes to a queue's
	// pipe: PIPE_BUF, the most a pipe2(O_DIRECT) pipe takes as one
	// packet (pipe_write splits larger writes). A CreateQueue.ReadSize
	// above it packs up to MaxPacket bytes.
	MaxPacket = 4096
)

// Op is a message's operation.
type Op uint16

// Operations. Each mirrors a kernel call: pipe2(O_NOTIFICATION_PIPE)
// (CreateQueue), IOC_WATCH_QUEUE_SET_SIZE (SetSize),
// IOC_WATCH_QUEUE_SET_FILTER (SetFilter), watch_devices(2)
// (WatchDevices), and watchq's own publisher channels.
const (
	OpHello           Op = 1  // first message: versions and the peer's identity
	OpCreateQueue     Op = 2  // a new queue; the reply carries the pipe's read end
	OpSetSize         Op = 3  // size a queue, once
	OpSetFilter       Op = 4  // install or remove a queue's filter
	OpWatchDevices    Op = 5  // watch the global device list with a tag, or -1 to remove
	OpWatchPublisher  Op = 6  // watch a publisher type with a tag, or -1 to remove
	OpPublish         Op = 7  // post a record of a publisher type
	OpStats           Op = 8  // daemon and queue counters
	OpCloseQueue      Op = 9  // close a queue and its pipe
	OpServerStats     Op = 10 // the caller's usage and limits; the daemon's internals for root
	OpWatchKey        Op = 11 // KEYCTL_WATCH_KEY: watch a key (a resolved serial) with a tag, or -1 to remove
	OpWatchMount      Op = 12 // watch_mount(2): a directory's mounts in the client's namespace, or -1 to remove
	OpWatchSuperblock Op = 13 // watch_sb(2): the filesystem a path is on, or -1 to remove
	OpCreateRing      Op = 14 // a new queue delivered through a shared-memory ring; the reply carries its fds (ring.go)

	// ReplyFlag is set in the op of every reply.
	ReplyFlag Op = 0x8000
)

var opNames = [...]string{
	OpHello: "hello", OpCreateQueue: "create-queue", OpSetSize: "set-size",
	OpSetFilter: "set-filter", OpWatchDevices: "watch-devices",
	OpWatchPublisher: "watch-publisher", OpPublish: "publish", OpStats: "stats",
	OpCloseQueue: "close-queue", OpServerStats: "server-stats",
	OpWatchKey:   "watch-key",
	OpWatchMount: "watch-mount", OpWatchSuperblock: "watch-sb",
	OpCreateRing: "create-ring",
}

func (o Op) String() string {
	r := ""
	if o&ReplyFlag != 0 {
		r = "reply:"
		o &^= ReplyFlag
	}
	if int(o) < len(opNames) && opNames[o] != "" {
		return r + opNames[o]
	}
	return fmt.Sprintf("%sop(%d)", r, uint16(o))
}

// Header is the 12 bytes in front of every message.
type Header struct {
	Op    Op
	Flags uint16 // must be 0
	ID    uint32 // chosen by the client, echoed in the reply
	Len   uint32 // body length: the packet's length minus HeaderSize
}

// Put writes h into b[:HeaderSize].
func (h Header) Put(b []byte) {
	binary.NativeEndian.PutUint16(b[0:], uint16(h.Op))
	binary.NativeEndian.PutUint16(b[2:], h.Flags)
	binary.NativeEndian.PutUint32(b[4:], h.ID)
	binary.NativeEndian.PutUint32(b[8:], h.Len)
}

// Errors the decoder returns; each carries the errno the daemon replies
// with.
func errInval(format string, args ...any) error {
	return &watchq.Errno{Errno: syscall.EINVAL, Reason: fmt.Sprintf(format, args...)}
}

func errNameTooLong(format string, args ...any) error {
	return &watchq.Errno{Errno: syscall.ENAMETOOLONG, Reason: fmt.Sprintf(format, args...)}
}

// ParseMessage splits one packet into its header and body, checking that
// the packet holds a whole header, that the length field matches the
// packet, and that the flags are 0 (all EINVAL).
func ParseMessage(b []byte) (Header, []byte, error) {
	if len(b) < HeaderSize {
		return Header{}, nil, errInval("message of %d bytes is shorter than the %d-byte header", len(b), HeaderSize)
	}
	h := Header{
		Op:    Op(binary.NativeEndian.Uint16(b[0:])),
		Flags: binary.NativeEndian.Uint16(b[2:]),
		ID:    binary.NativeEndian.Uint32(b[4:]),
		Len:   binary.NativeEndian.Uint32(b[8:]),
	}
	if uint64(h.Len) != uint64(len(b)-HeaderSize) {
		return h, nil, errInval("header says %d body bytes, message has %d", h.Len, len(b)-HeaderSize)
	}
	if h.Flags != 0 {
		return h, nil, errInval("unknown flags %#x", h.Flags)
	}
	return h, b[HeaderSize:], nil
}

// AppendMessage appends a message with op, id and body to b.
func AppendMessage(b []byte, op Op, id uint32, body []byte) []byte {
	var h [HeaderSize]byte
	Header{Op: op, ID: id, Len: uint32(len(body))}.Put(h[:])
	return append(append(b, h[:]...), body...)
}

// AppendReply appends a reply to request (op, id): errno 0 and body on
// success, or err's errno and reason.
func AppendReply(b []byte, op Op, id uint32, body []byte, err error) []byte {
	var r []byte
	if err != nil {
		errno, reason := ErrnoOf(err)
		r = binary.NativeEndian.AppendUint32(make([]byte, 0, 4+len(reason)), uint32(errno))
		r = append(r, reason...)
	} else {
		r = binary.NativeEndian.AppendUint32(make([]byte, 0, 4+len(body)), 0)
		r = append(r, body...)
	}
	return AppendMessage(b, op|ReplyFlag, id, r)
}

// ParseReply splits a reply body into its errno and the rest: the result
// on success, the reason on error.
func ParseReply(body []byte) (syscall.Errno, []byte, error) {
	if len(body) < 4 {
		return 0, nil, errInval("reply body of %d bytes has no errno", len(body))
	}
	return syscall.Errno(binary.NativeEndian.Uint32(body)), body[4:], nil
}
