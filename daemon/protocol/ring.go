package protocol

import "github.com/watchq/watchq/internal/shmring"

// CreateRing asks for a new queue delivered through a shared-memory ring
// instead of a pipe (docs/protocol.md, "Shared-memory ring"). Size is the
// engine queue's size, as in CreateQueue; Pages the ring's data area in
// pages of 4096 bytes, a power of two from 1 to shmring.MaxPages.
type CreateRing struct{ Size, Pages uint32 }

// Op implements Request.
func (CreateRing) Op() Op { return OpCreateRing }

// AppendBinary implements Request.
func (m CreateRing) AppendBinary(b []byte) ([]byte, error) { return u32s(b, m.Size, m.Pages), nil }

func parseCreateRing(body []byte) (Request, error) {
	w, err := fixed(OpCreateRing, body, 8)
	if err != nil {
		return nil, err
	}
	if !shmring.ValidPages(w[1]) {
		return nil, errInval("%v: %d pages, want a power of two from 1 to %d", OpCreateRing, w[1], shmring.MaxPages)
	}
	return CreateRing{Size: w[0], Pages: w[1]}, nil
}

// The file descriptors a RingReply carries, in SCM_RIGHTS order.
const (
	RingData  = iota // the data memfd: header and data area, sealed against writes (map it PROT_READ)
	RingIndex        // the index memfd, the consumer's to write (map it PROT_READ|PROT_WRITE)
	RingWake         // eventfd the daemon writes while the consumer sleeps
	RingSpace        // eventfd the consumer writes while the daemon waits for space
	RingFDs          // how many
)

// RingReply answers CreateRing: the queue's id, its engine capacity in
// notes (0 while unsized) and the data area's pages; RingFDs descriptors
// come with it.
type RingReply struct{ Queue, Capacity, Pages uint32 }

// AppendBinary encodes r.
func (r RingReply) AppendBinary(b []byte) ([]byte, error) {
	return u32s(b, r.Queue, r.Capacity, r.Pages), nil
}

// ParseRingReply decodes a RingReply.
func ParseRingReply(b []byte) (RingReply, error) {
	w, err := fixed(OpCreateRing|ReplyFlag, b, 12)
	if err != nil {
		return RingReply{}, err
	}
	if !shmring.ValidPages(w[2]) {
		return RingReply{}, errInval("%v: %d pages", OpCreateRing|ReplyFlag, w[2])
	}
	return RingReply{Queue: w[0], Capacity: w[1], Pages: w[2]}, nil
}
