//go:build linux

package keys

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
)

// Tags the scenario watches with, as keyutils' tests do: 1 for the session
// (here: the first test keyring), 2 for watch_add (here: the second
// keyring), 3 for every key created.
const (
	tagK1  = 1
	tagK2  = 2
	tagKey = 3
)

// ev is one record in a form tests compare: removal and loss records have
// sub "removal"/"loss".
type ev struct {
	sub string // record.KeySubtypeName, "removal" or "loss"
	key int32  // key_id, or the removal's id
	aux uint32
	tag record.Tag
}

// scenario drives the keyutils-style sequence against one Source and one
// engine queue, checking every record off like keyutils' check_notify.
type scenario struct {
	t     *testing.T
	src   *Source
	q     *watchq.Queue
	names map[int32]string // serial → name, for messages
	log   []string         // every checked step, for the comparison
}

func newScenario(t *testing.T, src *Source, q *watchq.Queue) *scenario {
	return &scenario{t: t, src: src, q: q, names: map[int32]string{}}
}

func (s *scenario) name(id int32) string {
	if n, ok := s.names[id]; ok {
		return n
	}
	return fmt.Sprint(id)
}

func (s *scenario) fmt(e ev) string {
	switch e.sub {
	case "linked", "unlinked":
		return fmt.Sprintf("%s %s %s tag%d", s.name(e.key), e.sub, s.name(int32(e.aux)), e.tag)
	case "loss":
		return "loss"
	}
	return fmt.Sprintf("%s %s aux=%d tag%d", s.name(e.key), e.sub, e.aux, e.tag)
}

// drain reads every queued record.
func (s *scenario) drain() []ev {
	var out []ev
	buf := make([]byte, 4096)
	for {
		n, err := s.q.TryRead(buf)
		if errors.Is(err, watchq.ErrWouldBlock) {
			return out
		}
		if err != nil {
			s.t.Fatalf("TryRead: %v", err)
		}
		for r, err := range record.Records(buf[:n]) {
			if err != nil {
				s.t.Fatalf("malformed record: %v", err)
			}
			out = append(out, toEv(s.t, r))
		}
	}
}

func toEv(t testing.TB, r record.Record) ev {
	switch {
	case r.IsLoss():
		return ev{sub: "loss"}
	case r.IsRemoval():
		m, err := r.Removal()
		if err != nil {
			t.Fatal(err)
		}
		return ev{sub: "removal", key: int32(m.ID), tag: m.Tag}
	case r.Type() == record.TypeKey:
		k, err := r.Key()
		if err != nil {
			t.Fatal(err)
		}
		return ev{sub: record.KeySubtypeName(k.Subtype), key: int32(k.KeyID), aux: k.Aux, tag: k.Tag}
	}
	t.Fatalf("unexpected record %v", r)
	return ev{}
}

// byKey orders records by key name, keeping each key's own order: records
// about different keys made within one poll interval have no defined order.
func (s *scenario) byKey(evs []ev) []ev {
	evs = slices.Clone(evs)
	// Order by the keys' scenario names, not their serials: serials differ
	// between runs, and the comparison of two backends' logs must not
	// depend on which key the kernel happened to number first.
	slices.SortStableFunc(evs, func(a, b ev) int { return strings.Compare(s.name(a.key), s.name(b.key)) })
	return evs
}

// expect is what one step should yield: kernel for the kernel backend, poll
// for the poll backend (the differences are the fidelity table's in
// docs/keys.md), and records the poll backend may or may not report.
type expect struct{ kernel, poll, optional []ev }

// check syncs the source and compares what arrived with want (for the kernel
// backend) or pollWant (for the poll backend; the differences are the
// fidelity table's in docs/keys.md). optional records may or may not arrive
// (poll only).
func (s *scenario) check(step string, x expect) {
	want, pollWant, optional := x.kernel, x.poll, x.optional
	s.t.Helper()
	if err := s.src.Sync(context.Background()); err != nil {
		s.t.Fatalf("%s: Sync: %v", step, err)
	}
	got := s.drain()
	if s.src.Backend() == Poll {
		want = pollWant
		got = slices.DeleteFunc(got, func(e ev) bool { return slices.Contains(optional, e) })
	}
	s.compare(step, got, want)
}

// waitFor syncs and reads until every record of want arrived (or 10s
// passed): for garbage collection, which runs after the operation returns.
func (s *scenario) waitFor(step string, x expect) {
	want, pollWant, optional := x.kernel, x.poll, x.optional
	s.t.Helper()
	if s.src.Backend() == Poll {
		want = pollWant
	}
	var got []ev
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := s.src.Sync(context.Background()); err != nil {
			s.t.Fatalf("%s: Sync: %v", step, err)
		}
		got = append(got, s.drain()...)
		if s.src.Backend() == Poll {
			got = slices.DeleteFunc(got, func(e ev) bool { return slices.Contains(optional, e) })
		}
		if len(got) >= len(want) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.compare(step, got, want)
}

func (s *scenario) compare(step string, got, want []ev) {
	s.t.Helper()
	g, w := s.byKey(got), s.byKey(want)
	var gs, ws []string
	for _, e := range g {
		gs = append(gs, s.fmt(e))
	}
	for _, e := range w {
		ws = append(ws, s.fmt(e))
	}
	s.log = append(s.log, step+": "+strings.Join(gs, "; "))
	if !slices.Equal(gs, ws) {
		s.t.Errorf("%s (%v backend):\n got  %q\n want %q", step, s.src.Backend(), gs, ws)
	}
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Key operations, each a keyctl(2)/add_key(2) call as keyctl(1) makes it.
const (
	keyctlMove = 30 // KEYCTL_MOVE (Linux 5.1)
)

func addKey(t testing.TB, typ, desc string, payload []byte, ring int32) int32 {
	t.Helper()
	id, err := unix.AddKey(typ, desc, payload, int(ring))
	must(t, "add_key "+desc, err)
	return int32(id)
}

func keyctl(t testing.TB, what string, cmd int, a2, a3, a4, a5 int) {
	t.Helper()
	_, err := unix.KeyctlInt(cmd, a2, a3, a4, a5)
	must(t, what, err)
}

// permAll grants possessor and user every permission: the scenario's keys
// must be usable from every thread of the test binary. Keyrings a thread
// possesses are no help: a session keyring may be absent in a test run, and
// creating or joining one, or the process keyring, changes only the calling
// thread's credentials (Go runs goroutines on many threads).
const permAll = 0x3f3f0000

// newKeyring makes a keyring (held by the user keyring, which every thread
// of the uid shares) with permAll.
func newKeyring(t testing.TB, name string) int32 {
	t.Helper()
	id := addKey(t, "keyring", name, nil, unix.KEY_SPEC_USER_KEYRING)
	must(t, "setperm", unix.KeyctlSetperm(int(id), permAll))
	t.Cleanup(func() { unix.KeyctlInt(unix.KEYCTL_UNLINK, int(id), unix.KEY_SPEC_USER_KEYRING, 0, 0) })
	return id
}

// run plays the whole sequence. requestKey says whether an upcall can
// construct keys here (/sbin/request-key configured for "debug:loop:").
func (s *scenario) run(requestKey bool) {
	t := s.t
	uniq := fmt.Sprintf("%d", time.Now().UnixNano())
	hold := newKeyring(t, "wq-hold-"+uniq) // keeps keys alive; not watched
	k1 := newKeyring(t, "wq-k1-"+uniq)
	k2 := newKeyring(t, "wq-k2-"+uniq)
	s.names[k1], s.names[k2], s.names[hold] = "K1", "K2", "H"
	must(t, "watch K1", s.src.Watch(s.q, k1, tagK1, nil))
	must(t, "watch K2", s.src.Watch(s.q, k2, tagK2, nil))
	same := func(e ...ev) expect { return expect{e, e, nil} }
	newKey := func(name, payload string, ring int32) int32 {
		id := addKey(t, "user", name+"-"+uniq, []byte(payload), ring)
		s.names[id] = name
		must(t, "setperm", unix.KeyctlSetperm(int(id), permAll))
		keyctl(t, "link to H", unix.KEYCTL_LINK, int(id), int(hold), 0, 0)
		return id
	}

	// add_key into a keyring: the keyring's LINKED. (INSTANTIATED goes to
	// the new key, which nobody can watch yet.)
	a := newKey("a", "x1", k1)
	s.check("add", same(ev{"linked", k1, uint32(a), tagK1}))
	must(t, "watch a", s.src.Watch(s.q, a, tagKey, nil))

	// add_key onto an existing key: key_update → UPDATED.
	addKey(t, "user", "a-"+uniq, []byte("x2"), k1)
	s.check("add again (update)", same(ev{"updated", a, 0, tagKey}))

	// KEYCTL_UPDATE.
	_, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(a), []byte("x3"), 0)
	must(t, "update", err)
	s.check("keyctl update", same(ev{"updated", a, 0, tagKey}))

	// KEYCTL_UPDATE with the same payload: the kernel posts UPDATED, a poll
	// cannot tell.
	_, err = unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(a), []byte("x3"), 0)
	must(t, "update", err)
	s.check("keyctl update, same payload", expect{kernel: []ev{{"updated", a, 0, tagKey}}})

	keyctl(t, "link", unix.KEYCTL_LINK, int(a), int(k2), 0, 0)
	s.check("link", same(ev{"linked", k2, uint32(a), tagK2}))

	keyctl(t, "unlink", unix.KEYCTL_UNLINK, int(a), int(k2), 0, 0)
	s.check("unlink", same(ev{"unlinked", k2, uint32(a), tagK2}))

	keyctl(t, "move", keyctlMove, int(a), int(k1), int(k2), 0)
	s.check("move", same(ev{"unlinked", k1, uint32(a), tagK1}, ev{"linked", k2, uint32(a), tagK2}))

	b := newKey("b", "y", k2)
	s.check("add b", same(ev{"linked", k2, uint32(b), tagK2}))
	c := newKey("c", "z", k2)
	s.check("add c", same(ev{"linked", k2, uint32(c), tagK2}))
	must(t, "watch b", s.src.Watch(s.q, b, tagKey, nil))
	must(t, "watch c", s.src.Watch(s.q, c, tagKey, nil))

	// KEYCTL_CLEAR: one CLEARED, no UNLINKED per key.
	keyctl(t, "clear", unix.KEYCTL_CLEAR, int(k2), 0, 0, 0)
	s.check("clear", same(ev{"cleared", k2, 0, tagK2}))

	keyctl(t, "revoke", unix.KEYCTL_REVOKE, int(b), 0, 0, 0)
	s.check("revoke", same(ev{"revoked", b, 0, tagKey}))

	// Invalidate: INVALIDATED, then the garbage collector destroys the key
	// (removal to its watchers) and drops its link from K1 without a
	// record. A poll seldom sees the key between the two (INVALIDATED is
	// optional) and sees K1 lose the link (UNLINKED).
	d := newKey("d", "w", k1)
	s.check("add d", same(ev{"linked", k1, uint32(d), tagK1}))
	must(t, "watch d", s.src.Watch(s.q, d, tagKey, nil))
	keyctl(t, "invalidate", unix.KEYCTL_INVALIDATE, int(d), 0, 0, 0)
	s.waitFor("invalidate + gc", expect{
		[]ev{{"invalidated", d, 0, tagKey}, {"removal", d, 0, tagKey}},
		[]ev{{"unlinked", k1, uint32(d), tagK1}, {"removal", d, 0, tagKey}},
		[]ev{{"invalidated", d, 0, tagKey}}})

	keyctl(t, "chown", unix.KEYCTL_CHOWN, int(c), -1, 1, 0) // gid 1: root keeps its user permissions
	s.check("chown", same(ev{"setattr", c, 0, tagKey}))
	must(t, "setperm", unix.KeyctlSetperm(int(c), permAll|0x3f))
	s.check("setperm", same(ev{"setattr", c, 0, tagKey}))
	keyctl(t, "set_timeout", unix.KEYCTL_SET_TIMEOUT, int(c), 1000, 0, 0)
	s.check("set_timeout", same(ev{"setattr", c, 0, tagKey}))
	// A new timeout within the resolution /proc/keys shows (here minutes):
	// the kernel posts SETATTR, a poll cannot tell.
	keyctl(t, "set_timeout", unix.KEYCTL_SET_TIMEOUT, int(c), 1001, 0, 0)
	s.check("set_timeout, same minute", expect{kernel: []ev{{"setattr", c, 0, tagKey}}})

	if requestKey {
		// request_key with an upcall: /sbin/request-key constructs the
		// key and links it into K1. INSTANTIATED is posted before
		// anyone can watch the new key (the watch waits for
		// construction), so the check is K1's LINKED.
		id, err := unix.RequestKey("user", "debug:loop:wq-"+uniq, "upcall payload", int(k1))
		must(t, "request_key", err)
		s.names[int32(id)] = "r"
		s.check("request_key (upcall)", same(ev{"linked", k1, uint32(id), tagK1}))
		must(t, "watch r", s.src.Watch(s.q, int32(id), tagKey, nil))
		s.check("watch r", expect{})
	}

	// Unwatch: a removal record with the key's id.
	must(t, "unwatch K2", s.src.Unwatch(s.q, k2))
	s.check("unwatch", same(ev{"removal", k2, 0, tagK2}))
	if err := s.src.Unwatch(s.q, k2); !errors.Is(err, watchq.ErrNoWatch) {
		t.Errorf("second unwatch: %v, want ErrNoWatch", err)
	}
}
