package protocol

import (
	"encoding/binary"
	"fmt"
)

// StatsRequest flags. An old daemon answers a request with flags
// (an 8-byte body) EINVAL; a client then asks again without them.
const (
	// StatsCounters asks for the counters section after the queue
	// entries: each source's counters and the per-class post counts.
	StatsCounters uint32 = 1 << iota

	statsRequestFlags = StatsCounters // every flag defined
)

// Counter kinds: what a CounterGroup counts.
const (
	// GroupSource is a notification source's counters (name "device",
	// "keys", "mount"): what it received, dropped and lost.
	GroupSource uint8 = 1
	// GroupClass is the policy's post decisions for one record class
	// (name "usb", "block-errors", "block-lifecycle", "publisher").
	GroupClass uint8 = 2
)

// Counter is one named, ever-growing figure. Its name is the one stat
// prints in text and JSON and the metrics endpoint derives its metric
// name from: lower case, words joined with '_'.
type Counter struct {
	Name  string
	Value uint64
}

// CounterGroup is a source's or a record class's counters.
type CounterGroup struct {
	Kind     uint8 // GroupSource or GroupClass; a parser keeps kinds it does not know
	Name     string
	Counters []Counter
}

// Limits of the counters section, which keep it within MaxReply beside a
// full page of entries.
const (
	MaxCounterGroups  = 16
	MaxGroupCounters  = 32
	MaxCounterNameLen = 40
)

// appendCounters encodes the counters section: u32 group count, then per
// group u8 kind, u8 name length, name, u16 counter count, and per counter
// u8 name length, name, u64 value. Names are self-describing so that a
// source or class added later needs no new layout.
func appendCounters(b []byte, gs []CounterGroup) []byte {
	ne := binary.NativeEndian
	b = ne.AppendUint32(b, uint32(len(gs)))
	for _, g := range gs {
		b = append(b, g.Kind, byte(len(g.Name)))
		b = append(b, g.Name...)
		b = ne.AppendUint16(b, uint16(len(g.Counters)))
		for _, c := range g.Counters {
			b = append(b, byte(len(c.Name)))
			b = append(b, c.Name...)
			b = ne.AppendUint64(b, c.Value)
		}
	}
	return b
}

// countersReader reads the counters section.
type countersReader struct{ b []byte }

func (r *countersReader) take(n int) ([]byte, error) {
	if n > len(r.b) {
		return nil, errInval("stats reply: counters section cut short")
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v, nil
}

func (r *countersReader) name() (string, error) {
	n, err := r.take(1)
	if err != nil {
		return "", err
	}
	if n[0] == 0 || n[0] > MaxCounterNameLen {
		return "", errInval("stats reply: counter name of %d bytes", n[0])
	}
	v, err := r.take(int(n[0]))
	return string(v), err
}

// parseCounters decodes the counters section, which must fill b.
func parseCounters(b []byte) ([]CounterGroup, error) {
	ne := binary.NativeEndian
	r := &countersReader{b: b}
	w, err := r.take(4)
	if err != nil {
		return nil, err
	}
	n := ne.Uint32(w)
	if n > MaxCounterGroups {
		return nil, errInval("stats reply: %d counter groups, at most %d", n, MaxCounterGroups)
	}
	gs := make([]CounterGroup, 0, n)
	for range n {
		k, err := r.take(1)
		if err != nil {
			return nil, err
		}
		g := CounterGroup{Kind: k[0]}
		if g.Name, err = r.name(); err != nil {
			return nil, err
		}
		w, err := r.take(2)
		if err != nil {
			return nil, err
		}
		nc := ne.Uint16(w)
		if nc > MaxGroupCounters {
			return nil, errInval("stats reply: group %q of %d counters, at most %d", g.Name, nc, MaxGroupCounters)
		}
		for range nc {
			var c Counter
			if c.Name, err = r.name(); err != nil {
				return nil, err
			}
			v, err := r.take(8)
			if err != nil {
				return nil, err
			}
			c.Value = ne.Uint64(v)
			g.Counters = append(g.Counters, c)
		}
		gs = append(gs, g)
	}
	if len(r.b) != 0 {
		return nil, errInval("stats reply: %d bytes after the counters section", len(r.b))
	}
	return gs, nil
}

// Value returns the counter named name, and whether g has one.
func (g CounterGroup) Value(name string) (uint64, bool) {
	for _, c := range g.Counters {
		if c.Name == name {
			return c.Value, true
		}
	}
	return 0, false
}

// String formats g as "kind name: a=1 b=2", for logs and tests.
func (g CounterGroup) String() string {
	s := fmt.Sprintf("%d %s:", g.Kind, g.Name)
	for _, c := range g.Counters {
		s += fmt.Sprintf(" %s=%d", c.Name, c.Value)
	}
	return s
}
