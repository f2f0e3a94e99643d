package fleet

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/watchq/watchq/record"
)

// Defaults shared by the forwarder and the consumer.
const (
	// DefaultPrefix is the first token of every subject.
	DefaultPrefix = "watchq"
	// DefaultStream is the JetStream stream the forwarder publishes to
	// and consumers read.
	DefaultStream = "WATCHQ"
	// DefaultDuplicateWindow is the stream's duplicate window when the
	// forwarder creates the stream (JetStream's own default).
	DefaultDuplicateWindow = 2 * time.Minute
)

// Headers every forwarded message carries. Nats-Msg-Id is
// host/boot/sequence, so that JetStream's duplicate window drops a replay.
const (
	HeaderMsgID = "Nats-Msg-Id"    // HOST/BOOT/SEQ
	HeaderHost  = "Watchq-Host"    // the host's name as the forwarder knows it (not the subject token)
	HeaderBoot  = "Watchq-Boot"    // the kernel's boot id (/proc/sys/kernel/random/boot_id)
	HeaderSeq   = "Watchq-Seq"     // per-host sequence, decimal, from 1, never reused
	HeaderTime  = "Watchq-Time"    // when the forwarder took the record from its queue, RFC 3339 with nanoseconds
	HeaderLost  = "Watchq-Lost"    // loss records only: the exact number of records lost at this point
	HeaderCause = "Watchq-Loss"    // loss records only: why, a comma-separated set of Cause names
	timeLayout  = time.RFC3339Nano // of HeaderTime
)

// Class is a class of records, the part of a subject after the host.
type Class string

// Record classes. A publisher record's class is "pub.TTTTTT" (PublisherClass).
const (
	ClassUSB            Class = "usb"             // USB device records
	ClassBlockError     Class = "block.error"     // block I/O errors (subtypes 1..10)
	ClassBlockLifecycle Class = "block.lifecycle" // every other block subtype (0x80.. add, remove, change...)
	ClassLoss           Class = "loss"            // records lost before the stream; always delivered with a host's records
	ClassKey            Class = "key"             // key records (the forwarder does not watch keys; for completeness)
	ClassOther          Class = "other"           // anything else
	classPublisherAll   Class = "pub.*"           // every publisher type, as a filter
)

// PublisherClass is the class of records of publisher type t: "pub." and
// the type in six lower-case hex digits.
func PublisherClass(t record.Type) Class { return Class(fmt.Sprintf("pub.%06x", uint32(t))) }

// PublisherType returns the publisher type of a class made by
// PublisherClass, and false for every other class.
func (c Class) PublisherType() (record.Type, bool) {
	hex, ok := strings.CutPrefix(string(c), "pub.")
	if !ok || len(hex) != 6 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 32)
	if err != nil || !record.Type(n).IsPublisher() {
		return 0, false
	}
	return record.Type(n), true
}

// IsPublisherType reports whether c is the class of one publisher type.
func (c Class) IsPublisherType() bool {
	_, ok := c.PublisherType()
	return ok
}

// ClassOf classifies a record.
func ClassOf(r record.Record) Class {
	switch t := r.Type(); {
	case t == record.TypeUSB:
		return ClassUSB
	case t == record.TypeBlock && record.IsBlockError(r.Subtype()):
		return ClassBlockError
	case t == record.TypeBlock:
		return ClassBlockLifecycle
	case t == record.TypeKey:
		return ClassKey
	case r.IsLoss():
		return ClassLoss
	case t.IsPublisher():
		return PublisherClass(t)
	}
	return ClassOther
}

// ParseClass reads a class as the command line names it: usb,
// block-errors (or block.error), block-lifecycle, loss, publisher (every
// publisher type) or a publisher type number (0x800001).
func ParseClass(s string) (Class, error) {
	switch strings.ToLower(s) {
	case "usb":
		return ClassUSB, nil
	case "block-errors", "block-error", "block.error":
		return ClassBlockError, nil
	case "block-lifecycle", "block.lifecycle":
		return ClassBlockLifecycle, nil
	case "loss":
		return ClassLoss, nil
	case "publisher", "publishers", "pub", "pub.*":
		return classPublisherAll, nil
	}
	var n uint64
	var err error
	if hex, ok := strings.CutPrefix(strings.ToLower(s), "pub."); ok {
		n, err = strconv.ParseUint(hex, 16, 32)
	} else {
		n, err = strconv.ParseUint(s, 0, 32)
	}
	if err != nil {
		return "", fmt.Errorf("class %q: want usb, block-errors, block-lifecycle, loss, publisher or a publisher type", s)
	}
	t, err := record.ParsePublisherType(n)
	if err != nil {
		return "", fmt.Errorf("class %q: %w", s, err)
	}
	return PublisherClass(t), nil
}

// HostToken makes a host name usable as one subject token: every byte
// outside A-Z a-z 0-9 - _ becomes _ ("web1.example.com" is
// "web1_example_com"). The HeaderHost header keeps the name as it was.
func HostToken(host string) string {
	if host == "" {
		return "_"
	}
	b := []byte(host)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Subject is the subject a host's record of class c goes to:
// PREFIX.HOST.CLASS, e.g. watchq.web1.block.error.
func Subject(prefix, host string, c Class) string {
	return prefix + "." + HostToken(host) + "." + string(c)
}

// Cause says why records were lost; a loss record's HeaderCause names
// every cause that contributed.
type Cause uint8

// Loss causes.
const (
	CauseBacklog Cause = 1 << iota // the forwarder's on-disk backlog was full
	CauseQueue                     // the forwarder's watchqd queue overflowed (or the source reported a loss)
	CauseWatchqd                   // the forwarder was not connected to watchqd; the count is unknown (0)
)

func (c Cause) String() string {
	var s []string
	for _, x := range []struct {
		c Cause
		n string
	}{{CauseBacklog, "backlog"}, {CauseQueue, "queue"}, {CauseWatchqd, "watchqd"}} {
		if c&x.c != 0 {
			s = append(s, x.n)
		}
	}
	return strings.Join(s, ",")
}

func parseCause(s string) Cause {
	var c Cause
	for _, w := range strings.Split(s, ",") {
		switch w {
		case "backlog":
			c |= CauseBacklog
		case "queue":
			c |= CauseQueue
		case "watchqd":
			c |= CauseWatchqd
		}
	}
	return c
}

// MsgID is the Nats-Msg-Id of a host's record: HOST/BOOT/SEQ.
func MsgID(host, boot string, seq uint64) string {
	return host + "/" + boot + "/" + strconv.FormatUint(seq, 10)
}

// Message is one forwarded record as a fleet consumer receives it.
type Message struct {
	Subject string        // e.g. watchq.web1.block.error
	Host    string        // HeaderHost
	Boot    string        // HeaderBoot
	Seq     uint64        // HeaderSeq: the host's sequence
	Time    time.Time     // HeaderTime
	Record  record.Record // the record's exact bytes, as the forwarder read them from its queue
	Class   Class

	// Loss records only: Lost is the exact number of records lost at
	// this point (the record's own count saturates at 0xffff), Cause why.
	// Lost is 0 for CauseWatchqd: nobody counted.
	Lost  uint64
	Cause Cause

	// Gap is the number of this host's sequence numbers (this boot)
	// skipped since the previous record the consumer delivered: records
	// the stream no longer holds (its limits), or records still to come
	// out of order. Only set by consumers that receive every class of
	// the host; a filtered consumer skips other classes' numbers by
	// design.
	Gap uint64
	// Late marks a record that arrived after a later one of its host
	// (only when the forwarder resent after the server rejected a
	// message mid-window); it fills an earlier Gap.
	Late bool

	StreamSeq uint64 // the stream's sequence number of the message
}

// parseMessage decodes a message the forwarder published.
func parseMessage(subject string, h nats.Header, data []byte) (*Message, error) {
	rec, err := record.ParseRecord(data)
	if err != nil {
		return nil, fmt.Errorf("fleet: %s: %w", subject, err)
	}
	if len(rec) != len(data) {
		return nil, fmt.Errorf("fleet: %s: %d bytes hold a %d-byte record", subject, len(data), len(rec))
	}
	m := &Message{Subject: subject, Record: rec, Class: ClassOf(rec), Host: h.Get(HeaderHost), Boot: h.Get(HeaderBoot)}
	if m.Seq, err = strconv.ParseUint(h.Get(HeaderSeq), 10, 64); err != nil || m.Host == "" {
		return nil, fmt.Errorf("fleet: %s: not a forwarded record (host %q, seq %q)", subject, m.Host, h.Get(HeaderSeq))
	}
	m.Time, _ = time.Parse(timeLayout, h.Get(HeaderTime))
	if rec.IsLoss() {
		m.Lost, _ = strconv.ParseUint(h.Get(HeaderLost), 10, 64)
		m.Cause = parseCause(h.Get(HeaderCause))
	}
	return m, nil
}
