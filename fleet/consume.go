package fleet

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Deliver says where a new consumer starts in the stream.
type Deliver int

// Start positions.
const (
	DeliverAll      Deliver = iota // from the first message the stream holds
	DeliverNew                     // only messages stored from now on
	DeliverLast                    // from the last message
	DeliverFromSeq                 // from ConsumerConfig.StartSeq
	DeliverFromTime                // from ConsumerConfig.StartTime
)

// ConsumerConfig says what a fleet consumer reads.
type ConsumerConfig struct {
	Stream string // DefaultStream if empty
	Prefix string // DefaultPrefix if empty

	// Durable names a durable consumer: the stream remembers what it
	// acknowledged, so a consumer started again with the same name goes on
	// where it stopped. Each message is acknowledged after the loop body
	// that received it returns. Empty: an ephemeral consumer, which acks
	// nothing.
	Durable string

	// Hosts are the hosts to read (their names or subject tokens); empty
	// or "*": every host.
	Hosts []string
	// Classes are the classes to read; empty: every class. A host's loss
	// records are always read with its other records.
	Classes []Class

	Deliver   Deliver
	StartSeq  uint64    // DeliverFromSeq
	StartTime time.Time // DeliverFromTime

	// Batch is how many messages one pull asks for (default 512).
	Batch int

	// OnError, if set, is told of errors the consumer recovers from by
	// itself: the server going away, the consumer vanishing with it and
	// being created again, a message that is not a forwarded record.
	OnError func(error)
}

// FilterSubjects returns the subject filters of cfg's consumer.
func (cfg ConsumerConfig) FilterSubjects() []string {
	prefix := cmpOr(cfg.Prefix, DefaultPrefix)
	hosts := []string{"*"}
	if len(cfg.Hosts) > 0 && !slices.Contains(cfg.Hosts, "*") {
		hosts = nil
		for _, h := range cfg.Hosts {
			hosts = append(hosts, HostToken(h))
		}
	}
	var classes []string
	if len(cfg.Classes) == 0 {
		classes = []string{">"}
	} else {
		allPub := slices.Contains(cfg.Classes, classPublisherAll)
		for _, c := range cfg.Classes {
			if allPub && c != classPublisherAll && len(c) > 4 && c[:4] == "pub." {
				continue // within pub.*
			}
			classes = append(classes, string(c))
		}
		if !slices.Contains(cfg.Classes, ClassLoss) {
			classes = append(classes, string(ClassLoss))
		}
	}
	var subj []string
	for _, h := range hosts {
		for _, c := range classes {
			s := prefix + "." + h + "." + c
			if !slices.Contains(subj, s) {
				subj = append(subj, s)
			}
		}
	}
	return subj
}

func (cfg ConsumerConfig) consumerConfig(startSeq uint64) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		Description:    "watchq fleet consumer",
		AckPolicy:      jetstream.AckNonePolicy,
		FilterSubjects: cfg.FilterSubjects(),
	}
	if len(cc.FilterSubjects) == 1 {
		cc.FilterSubject, cc.FilterSubjects = cc.FilterSubjects[0], nil
	}
	if cfg.Durable != "" {
		cc.AckPolicy = jetstream.AckExplicitPolicy
		cc.MaxAckPending = 4 * cmpOr(cfg.Batch, 512)
	} else {
		cc.InactiveThreshold = time.Minute
	}
	switch {
	case startSeq > 0:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, startSeq
	case cfg.Deliver == DeliverNew:
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	case cfg.Deliver == DeliverLast:
		cc.DeliverPolicy = jetstream.DeliverLastPolicy
	case cfg.Deliver == DeliverFromSeq:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, cfg.StartSeq
	case cfg.Deliver == DeliverFromTime:
		t := cfg.StartTime
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	default:
		cc.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	return cc
}

// Watch reads the fleet's records from the stream, in the stream's order,
// which keeps each host's order. Each host's record (host, boot id,
// sequence) is yielded at most once, whatever the stream holds twice; a
// jump in a host's sequence is reported in Message.Gap. Watch recovers by
// itself from the server going away and from its consumer vanishing (it
// creates it again where it stopped); it ends when ctx does, yielding
// ctx.Err() once, or with the error that made it give up (the stream does
// not exist, the consumer's configuration is refused).
func Watch(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig) iter.Seq2[*Message, error] {
	return func(yield func(*Message, error) bool) {
		w := &watcher{cfg: cfg, hosts: map[hostBoot]*hostState{}}
		w.run(ctx, js, yield)
	}
}

type hostBoot struct{ host, boot string }

type watcher struct {
	cfg        ConsumerConfig
	hosts      map[hostBoot]*hostState
	lastStream uint64 // the stream sequence of the last message received
}

func (w *watcher) report(err error) {
	if w.cfg.OnError != nil {
		w.cfg.OnError(err)
	}
}

func (w *watcher) run(ctx context.Context, js jetstream.JetStream, yield func(*Message, error) bool) {
	stream := cmpOr(w.cfg.Stream, DefaultStream)
	batch := cmpOr(w.cfg.Batch, 512)
	backoff := newBackoff()
	for {
		var start uint64
		if w.cfg.Durable == "" && w.lastStream > 0 {
			start = w.lastStream + 1
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := js.CreateOrUpdateConsumer(cctx, stream, w.cfg.consumerConfig(start))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				yield(nil, ctx.Err())
				return
			}
			if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrInvalidConsumerName) {
				yield(nil, fmt.Errorf("fleet: consumer on stream %s: %w", stream, err))
				return
			}
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.Code == 400 {
				yield(nil, fmt.Errorf("fleet: consumer on stream %s: %w", stream, err))
				return
			}
			w.report(fmt.Errorf("fleet: consumer on stream %s: %w", stream, err))
			if !backoff.wait(ctx) {
				yield(nil, ctx.Err())
				return
			}
			continue
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(batch), jetstream.WithMessagesErrOnMissingHeartbeat(true))
		if err != nil {
			w.report(err)
			if !backoff.wait(ctx) {
				yield(nil, ctx.Err())
				return
			}
			continue
		}
		backoff.reset()
		stop := w.read(ctx, it, yield)
		it.Stop()
		if stop {
			return
		}
		if !backoff.wait(ctx) {
			yield(nil, ctx.Err())
			return
		}
	}
}

// read yields the messages of one consumer. It reports true when the
// iteration is over (the caller stopped, or ctx ended), false when the
// consumer must be created again.
func (w *watcher) read(ctx context.Context, it jetstream.MessagesContext, yield func(*Message, error) bool) bool {
	next := jetstream.NextContext(ctx)
	for {
		msg, err := it.Next(next)
		if err != nil {
			if ctx.Err() != nil {
				yield(nil, ctx.Err())
				return true
			}
			w.report(fmt.Errorf("fleet: consumer: %w", err))
			return false
		}
		meta, err := msg.Metadata()
		if err != nil {
			w.report(fmt.Errorf("fleet: %s: %w", msg.Subject(), err))
			continue
		}
		if meta.Sequence.Stream <= w.lastStream && w.cfg.Durable == "" {
			continue // redelivered after the consumer was created again
		}
		w.lastStream = meta.Sequence.Stream
		m, err := parseMessage(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			w.report(err)
			w.ack(msg)
			continue
		}
		m.StreamSeq = meta.Sequence.Stream
		hs := w.hosts[hostBoot{m.Host, m.Boot}]
		if hs == nil {
			hs = &hostState{}
			w.hosts[hostBoot{m.Host, m.Boot}] = hs
		}
		deliver, gap, late := hs.see(m.Seq)
		if !deliver {
			w.ack(msg)
			continue
		}
		if len(w.cfg.Classes) == 0 {
			m.Gap = gap
		}
		m.Late = late
		more := yield(m, nil)
		w.ack(msg)
		if !more {
			return true
		}
	}
}

func (w *watcher) ack(msg jetstream.Msg) {
	if w.cfg.Durable != "" {
		if err := msg.Ack(); err != nil {
			w.report(fmt.Errorf("fleet: ack: %w", err))
		}
	}
}

// hostState is what a consumer knows of one host's (boot's) sequence:
// the next it expects and the numbers below it not seen yet.
type hostState struct {
	next uint64
	gaps []span // sorted, disjoint
}

type span struct{ lo, hi uint64 } // [lo, hi)

// maxGaps bounds the gaps remembered per host; the oldest go first (a
// record that late is taken for a duplicate).
const maxGaps = 4096

// see decides about sequence seq: deliver it or not (a duplicate), how
// many numbers it skips, and whether it fills an earlier gap.
func (h *hostState) see(seq uint64) (deliver bool, gap uint64, late bool) {
	switch {
	case h.next == 0:
		h.next = seq + 1
		return true, 0, false
	case seq >= h.next:
		if seq > h.next {
			gap = seq - h.next
			h.gaps = append(h.gaps, span{h.next, seq})
			if len(h.gaps) > maxGaps {
				h.gaps = slices.Delete(h.gaps, 0, len(h.gaps)-maxGaps)
			}
		}
		h.next = seq + 1
		return true, gap, false
	}
	i := sort.Search(len(h.gaps), func(i int) bool { return h.gaps[i].hi > seq })
	if i == len(h.gaps) || h.gaps[i].lo > seq {
		return false, 0, false
	}
	g := h.gaps[i]
	switch {
	case g.lo == seq && g.hi == seq+1:
		h.gaps = slices.Delete(h.gaps, i, i+1)
	case g.lo == seq:
		h.gaps[i].lo++
	case g.hi == seq+1:
		h.gaps[i].hi--
	default:
		h.gaps[i].hi = seq
		h.gaps = slices.Insert(h.gaps, i+1, span{seq + 1, g.hi})
	}
	return true, 0, true
}
