package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Fast batch publishing (nats-server 2.14 and later, streams with
// allow_batched; nats-server's server/jetstream_batching.go): the
// forwarder publishes a run of records as one batch, each message a plain
// publish whose reply subject names the batch, its sequence in it and the
// operation:
//
//	<inbox>.<batch id>.<flow>.fail.<batch seq>.<op>.$FI
//
// The stream stores each message as it comes (duplicates by Nats-Msg-Id
// are skipped as for any publish) and, instead of one acknowledgement per
// message, sends a flow acknowledgement every <flow> messages or fewer
// ("every message up to batch seq N is stored": gap mode fail) and one
// PubAck when the batch is committed. The forwarder commits with an
// end-of-batch message (no record) whenever it has caught up with the
// backlog. What the stream acknowledges is exactly as certain as a
// PubAck per message: in gap mode fail the batch ends at the first
// message it does not store, and the PubAck says how many it did.
const (
	batchFlow = 500 // the flow acknowledgement interval asked for (the server's maximum)

	opStart     = 0 // FastBatchOpStart: the batch's first message
	opAppend    = 1 // FastBatchOpAppend
	opCommit    = 2 // FastBatchOpCommit: a message that also ends the batch
	opCommitEOB = 3 // FastBatchOpCommitEob: end the batch; not stored

	errBatchDisabled = 10205 // JSBatchPublishDisabledErr
)

// batchState is the current batch, guarded by Forwarder.pmu.
type batchState struct {
	on     bool   // the stream takes fast batches (until it refuses one)
	id     string // the open batch ("" none)
	start  uint64 // the sequence of its first record
	n      uint64 // records published in it
	commit bool   // its end was published; the PubAck is awaited
	// probe: the next record may already be in the stream (a replay).
	// Each batch is then a single record committed at once, so that a
	// duplicate (which ends a fast batch at its first message) costs one
	// batch, until the stream stores one.
	probe bool
}

// errReprobe ends a round without a failure: the batch's first record was
// a duplicate; the next round starts at once from the next one.
var errReprobe = errors.New("fleet: replaying duplicates")

// batchReply is any reply to a fast batch message: a flow acknowledgement
// ("type": "ack"), a gap or an error report ("gap", "err"), or a PubAck.
type batchReply struct {
	Type      string `json:"type"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	Batch     string `json:"batch"`
	Count     uint64 `json:"count"`
	Error     *struct {
		Code        int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// onBatchReply is the callback of the forwarder's reply subscription.
func (f *Forwarder) onBatchReply(m *nats.Msg) {
	id := m.Subject[min(len(f.inbox)+1, len(m.Subject)):]
	if i := strings.IndexByte(id, '.'); i >= 0 {
		id = id[:i]
	}
	var r batchReply
	err := json.Unmarshal(m.Data, &r)
	f.pmu.Lock()
	b := &f.batch
	if id != b.id || b.id == "" {
		// A batch given up on: its replies do not count.
		f.pmu.Unlock()
		return
	}
	wake := false
	switch {
	case len(m.Data) == 0:
		// A status, 503: no responders (no stream takes the subject).
		st := "status " + m.Header.Get("Status")
		if st == "status 503" {
			st = "no responders: no stream takes the subjects"
		}
		f.failLocked(fmt.Errorf("batch %s: %s", id, st))
	case err != nil:
		f.failLocked(fmt.Errorf("batch reply %q: %w", m.Data, err))
	case r.Error != nil:
		if r.Error.Code == errBatchDisabled {
			b.on = false
		}
		f.failLocked(fmt.Errorf("batch %s: %s (%d)", id, r.Error.Description, r.Error.Code))
	case r.Type == "ack":
		wake = f.ackedLocked(b.start - 1 + r.Seq)
	case r.Type != "":
		f.failLocked(fmt.Errorf("batch %s: %s", id, m.Data))
	case r.Batch == "":
		// A server without fast batches stored the message as any
		// publish: publish one message at a time.
		b.on = false
		f.failLocked(errors.New("the server does not take fast batches"))
	default:
		// The PubAck: the batch is over, and the stream holds its first
		// Count records.
		f.ackedLocked(b.start - 1 + r.Count)
		switch {
		case r.Duplicate && r.Count == 1 && b.n > 1:
			// The first message was a duplicate: the stream ended the
			// batch there.
			b.probe = true
			f.failLocked(errReprobe)
		case r.Count < b.n:
			f.failLocked(fmt.Errorf("batch %s ended after %d of %d records", id, r.Count, b.n))
		case !r.Duplicate:
			b.probe = false
		}
		b.id, b.commit = "", false
		wake = true
	}
	wake = wake || f.failed != nil
	f.pmu.Unlock()
	if wake {
		f.poke()
	}
}

// failLocked ends the round. f.pmu is held.
func (f *Forwarder) failLocked(err error) {
	if f.failed == nil {
		f.failed = err
	}
	f.batch.id = ""
}

// ackedLocked records that every sequence up to seq is in the stream,
// and reports whether the publisher waits for that: the window had been
// full. f.pmu is held.
func (f *Forwarder) ackedLocked(seq uint64) (wake bool) {
	if seq > f.acked {
		f.acked = seq
		f.ackedCopy.Store(seq)
	}
	if f.resumeAt != 0 && f.acked >= f.resumeAt {
		f.resumeAt = 0
		return true
	}
	return false
}

// batchRound publishes from sequence next on in fast batches until a
// batch fails or ctx ends. It is round's counterpart for streams that take
// fast batches.
func (f *Forwarder) batchRound(ctx context.Context, nc *nats.Conn, cur *cursor, e *entry, next uint64, saveTick *time.Ticker, backoff *backoff) error {
	caughtUp := false
	lastAcked, lastProgress := uint64(0), time.Now()
	var msg reusedMsg // nats.go copies a plain publish at once
	lastSubject := "" // of the last record published: a batch's end goes there
	publish := func(m *nats.Msg) error {
		if err := nc.PublishMsg(m); err != nil {
			f.pmu.Lock()
			f.failLocked(err)
			f.pmu.Unlock()
			return err
		}
		f.published.Add(1)
		return nil
	}
	// commit ends the open batch, if any and not ended yet.
	commit := func() error {
		f.pmu.Lock()
		b := &f.batch
		if b.id == "" || b.commit || b.n == 0 {
			f.pmu.Unlock()
			return nil
		}
		b.commit = true
		m := &nats.Msg{Subject: lastSubject, Reply: string(f.appendReply(nil, b.id, b.n+1, opCommitEOB))}
		f.pmu.Unlock()
		return publish(m)
	}
	for {
		f.pmu.Lock()
		acked, failed, probe := f.acked, f.failed, f.batch.probe
		// An ended batch takes no more records: the next batch starts
		// when its PubAck has come.
		ending := f.batch.id != "" && f.batch.commit
		f.pmu.Unlock()
		if failed != nil {
			return failed
		}
		if ctx.Err() != nil {
			if err := commit(); err != nil {
				return err
			}
			return ctx.Err()
		}
		if acked != lastAcked {
			lastAcked, lastProgress = acked, time.Now()
		}
		for !caughtUp && next-acked <= f.window && !ending {
			ok, err := cur.next(e)
			if err != nil {
				return fatalError{err}
			}
			if !ok {
				caughtUp = true
				break
			}
			if e.seq != next {
				return fatalError{fmt.Errorf("fleet: backlog: record %d where %d belongs", e.seq, next)}
			}
			f.pmu.Lock()
			if f.failed != nil {
				// The batch failed: no record may go after it in this
				// round, not even in a new batch, or the stream would
				// hold them ahead of the ones it did not store.
				f.pmu.Unlock()
				break
			}
			next++
			b := &f.batch
			if b.id == "" {
				b.id, b.start, b.n, b.commit = nats.NewInbox()[len(nats.InboxPrefix):], e.seq, 0, probe
			}
			b.n++
			op := opAppend
			switch {
			case probe:
				op = opCommit
			case b.n == 1:
				op = opStart
			}
			id, n := b.id, b.n
			f.high = max(f.high, e.seq)
			f.pmu.Unlock()
			m := f.message(e, &msg, id, n, op)
			lastSubject = m.Subject
			if err := publish(m); err != nil {
				return fmt.Errorf("record %d: %w", e.seq, err)
			}
			backoff.reset()
			ending = probe
		}
		if caughtUp {
			if err := commit(); err != nil {
				return err
			}
		} else if next-acked > f.window {
			// The window is full: wait until half of it is free.
			if f.halfFree(next) {
				continue
			}
		}
		if err := f.sp.ack(acked); err != nil {
			return fatalError{err}
		}
		select {
		case <-ctx.Done():
		case <-f.wake:
		case <-f.sp.notify:
			caughtUp = false
		case <-saveTick.C:
			if err := f.sp.saveState(false); err != nil {
				return fatalError{err}
			}
			if !nc.IsConnected() {
				return errors.New("NATS not connected")
			}
			if next-1 > acked && time.Since(lastProgress) > f.cfg.AckTimeout {
				return fmt.Errorf("no acknowledgement for %v", f.cfg.AckTimeout)
			}
			caughtUp = false
		}
	}
}

// appendReply appends the reply subject of a fast batch message.
func (f *Forwarder) appendReply(b []byte, id string, seq uint64, op int) []byte {
	b = append(b, f.inbox...)
	b = append(b, '.')
	b = append(b, id...)
	b = append(b, "."+strconv.Itoa(batchFlow)+".fail."...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(op), 10)
	return append(b, ".$FI"...)
}
