//go:build linux

package keys

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys/internal/keytrace"
)

// fidelityGolden is the stream the guest kernel's own facility gave for
// the fidelity scenario (TestVMFidelity writes it; see docs/keys.md).
const fidelityGolden = "testdata/fidelity.kernel"

// fidelity plays the scripted scenario of docs/keys.md's fidelity table
// against src and returns the stream, one line per step: the records every
// queue received, in order, keys named. It locks the calling goroutine (a
// test's own) to its thread for good and gives the thread a fresh session
// keyring, so @s is the scenario's; the thread ends with the test.
func fidelity(t *testing.T, src *Source) []string {
	runtime.LockOSThread() // never unlocked: the thread's session keyring is the scenario's
	// A new anonymous session keyring (KEYCTL_JOIN_SESSION_KEYRING, NULL).
	if _, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); errno != 0 {
		t.Fatalf("join session: %v", errno)
	}
	q := watchq.NewQueue()
	if _, err := q.SetSize(256); err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	names := map[int32]string{}
	name := func(id int32) string {
		if n, ok := names[id]; ok {
			return n
		}
		return "?" + strconv.Itoa(int(id))
	}
	var log []string
	format := func(qname string, evs []ev) string {
		var parts []string
		for i := 0; i < len(evs); {
			e := evs[i]
			var s string
			switch e.sub {
			case "linked", "unlinked":
				s = fmt.Sprintf("%s %s %s", name(e.key), e.sub, name(int32(e.aux)))
			case "loss":
				s = "loss"
			case "removal":
				s = fmt.Sprintf("%s removal", name(e.key))
			default:
				s = fmt.Sprintf("%s %s aux=%d", name(e.key), e.sub, int32(e.aux))
			}
			s += fmt.Sprintf(" tag%d", e.tag)
			if e.sub == "loss" {
				s = "loss"
			}
			n := 1
			for i+n < len(evs) && evs[i+n] == e {
				n++
			}
			if n > 1 {
				s += fmt.Sprintf(" ×%d", n)
			}
			parts = append(parts, s)
			i += n
		}
		return qname + ": " + strings.Join(parts, "; ")
	}
	drain := func(q *watchq.Queue) []ev { return newScenario(t, src, q).drain() }
	sync := func() {
		if err := src.Sync(context.Background()); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
	step := func(what string, do func()) {
		t.Helper()
		do()
		sync()
		log = append(log, what+" → "+format("q", drain(q)))
	}
	key := func(typ, desc, payload string, ring int32) int32 {
		t.Helper()
		id, err := unix.AddKey(typ, desc, []byte(payload), int(ring))
		must(t, "add_key "+desc, err)
		return int32(id)
	}
	kc := func(what string, cmd int, a ...int) {
		t.Helper()
		a = append(a, 0, 0, 0, 0)
		_, err := unix.KeyctlInt(cmd, a[0], a[1], a[2], a[3])
		must(t, fmt.Sprint(what, a[:3]), err)
	}
	update := func(k int32, payload string) {
		_, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(k), []byte(payload), 0)
		must(t, "update", err)
	}
	watch := func(q *watchq.Queue, id int32, tag int) {
		t.Helper()
		must(t, "watch "+name(id), src.Watch(q, id, recordTag(tag), nil))
	}
	session := func() int32 {
		id, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
		must(t, "@s", err)
		return int32(id)
	}

	s1 := session()
	names[s1] = "S1"
	// hold, in the user keyring (outside S1) and writable without
	// possession, keeps S1 alive once the thread leaves it.
	hold := key("keyring", "wq-f-hold", "", unix.KEY_SPEC_SESSION_KEYRING)
	must(t, "setperm hold", unix.KeyctlSetperm(int(hold), permAll))
	kc("hold in @u", unix.KEYCTL_LINK, int(hold), unix.KEY_SPEC_USER_KEYRING)
	kc("hold out of @s", unix.KEYCTL_UNLINK, int(hold), unix.KEY_SPEC_SESSION_KEYRING)
	t.Cleanup(func() { unix.KeyctlInt(unix.KEYCTL_UNLINK, int(hold), unix.KEY_SPEC_USER_KEYRING, 0, 0) })
	watch(q, unix.KEY_SPEC_SESSION_KEYRING, 1)
	var h, r, a, b, c int32
	step("add keyring H to @s", func() { h = key("keyring", "wq-f-H", "", unix.KEY_SPEC_SESSION_KEYRING); names[h] = "H" })
	step("add keyring R to @s", func() { r = key("keyring", "wq-f-R", "", unix.KEY_SPEC_SESSION_KEYRING); names[r] = "R" })
	must(t, "setperm R", unix.KeyctlSetperm(int(r), permAll))
	watch(q, r, 2)
	step("add user key a to R", func() { a = key("user", "wq-f-a", "1", r); names[a] = "a" })
	must(t, "setperm a", unix.KeyctlSetperm(int(a), permAll))
	kc("link a H", unix.KEYCTL_LINK, int(a), int(h))
	sync()
	drain(q)
	watch(q, a, 3)
	step("add_key a again (update)", func() { key("user", "wq-f-a", "2", r) })
	step("keyctl update a", func() { update(a, "3") })
	step("keyctl update a, same payload", func() { update(a, "3") })
	step("link a to @s", func() { kc("link", unix.KEYCTL_LINK, int(a), unix.KEY_SPEC_SESSION_KEYRING) })
	step("link a to @s again (re-link)", func() { kc("link", unix.KEYCTL_LINK, int(a), unix.KEY_SPEC_SESSION_KEYRING) })
	step("unlink a from @s", func() { kc("unlink", unix.KEYCTL_UNLINK, int(a), unix.KEY_SPEC_SESSION_KEYRING) })
	step("unlink a from @s again (fails)", func() {
		if _, err := unix.KeyctlInt(unix.KEYCTL_UNLINK, int(a), unix.KEY_SPEC_SESSION_KEYRING, 0, 0); !errors.Is(err, unix.ENOENT) {
			t.Errorf("second unlink: %v, want ENOENT", err)
		}
	})
	step("move a from R to @s", func() { kc("move", keyctlMove, int(a), int(r), unix.KEY_SPEC_SESSION_KEYRING, 0) })
	step("move a back", func() { kc("move", keyctlMove, int(a), unix.KEY_SPEC_SESSION_KEYRING, int(r), 0) })
	step("add b and c to R", func() {
		b = key("user", "wq-f-b", "b", r)
		c = key("user", "wq-f-c", "c", r)
		names[b], names[c] = "b", "c"
		for _, k := range []int32{b, c} {
			must(t, "setperm", unix.KeyctlSetperm(int(k), permAll))
			kc("link H", unix.KEYCTL_LINK, int(k), int(h))
		}
	})
	watch(q, b, 3)
	watch(q, c, 3)
	step("clear R", func() { kc("clear", unix.KEYCTL_CLEAR, int(r)) })
	step("clear R again (empty)", func() { kc("clear", unix.KEYCTL_CLEAR, int(r)) })
	step("revoke b", func() { kc("revoke", unix.KEYCTL_REVOKE, int(b)) })
	step("revoke b again (fails)", func() {
		if _, err := unix.KeyctlInt(unix.KEYCTL_REVOKE, int(b), 0, 0, 0); !errors.Is(err, unix.EKEYREVOKED) {
			t.Errorf("second revoke: %v, want EKEYREVOKED", err)
		}
	})
	step("setperm a", func() { must(t, "setperm", unix.KeyctlSetperm(int(a), permAll|0x01)) })
	step("chown a (gid 1)", func() { kc("chown", unix.KEYCTL_CHOWN, int(a), -1, 1) })
	step("set_timeout a 1000", func() { kc("set_timeout", unix.KEYCTL_SET_TIMEOUT, int(a), 1000) })
	step("set_timeout a 1001", func() { kc("set_timeout", unix.KEYCTL_SET_TIMEOUT, int(a), 1001) })
	step("set_timeout a 0", func() { kc("set_timeout", unix.KEYCTL_SET_TIMEOUT, int(a), 0) })

	// A storm into a 1-note queue (rounded up to one 32-note page, as the
	// kernel rounds a notification pipe): 32 records, then the loss.
	small := watchq.NewQueue()
	if _, err := small.SetSize(1); err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	watch(small, a, 9)
	for i := range 64 {
		update(a, fmt.Sprint("storm", i))
	}
	sync()
	log = append(log, "64 updates of a → "+format("q", drain(q)), "64 updates of a → "+format("small", drain(small)))

	// Invalidate: INVALIDATED, then the garbage collector's removal.
	kc("invalidate", unix.KEYCTL_INVALIDATE, int(c))
	var got []ev
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !slices.ContainsFunc(got, func(e ev) bool { return e.sub == "removal" }) {
		sync()
		got = append(got, drain(q)...)
		time.Sleep(20 * time.Millisecond)
	}
	log = append(log, "invalidate c, gc → "+format("q", got))

	// A session keyring change: the watch stays on S1; @s now means S2.
	// S1 is held by a keyring of the user keyring meanwhile, so the
	// garbage collector leaves it (and its removal record) alone.
	kc("hold S1", unix.KEYCTL_LINK, int(s1), int(hold))
	var s2, k2, k3 int32
	step("join a new session S2, add k2 to @s", func() {
		if _, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); errno != 0 {
			t.Fatalf("join: %v", errno)
		}
		s2 = session()
		names[s2] = "S2"
		k2 = key("user", "wq-f-k2", "x", unix.KEY_SPEC_SESSION_KEYRING)
		names[k2] = "k2"
	})
	watch(q, unix.KEY_SPEC_SESSION_KEYRING, 4)
	step("add k3 to @s", func() { k3 = key("user", "wq-f-k3", "x", unix.KEY_SPEC_SESSION_KEYRING); names[k3] = "k3" })
	step("link R to @s (S2)", func() { kc("link", unix.KEYCTL_LINK, int(r), unix.KEY_SPEC_SESSION_KEYRING) })

	// A key another user owns and we may not view: no watch, no record.
	bob := startFidelityBob(t)
	names[bob.key] = "bob"
	err := src.Watch(q, bob.key, 5, nil)
	log = append(log, fmt.Sprintf("watch bob's key → EACCES %v", errors.Is(err, unix.EACCES)))
	step("bob updates his key, re-links it, setperm", func() { bob.say(t, "change"); bob.expectLine(t) })

	step("unwatch R", func() { must(t, "unwatch", src.Unwatch(q, r)) })
	step("unwatch @s (S2)", func() { must(t, "unwatch", src.Unwatch(q, s2)) })
	return log
}

// fidelityHelperEnv makes the test binary act as bob, the other user of the
// fidelity scenario.
const fidelityHelperEnv = "WATCHQ_KEYS_FIDELITY_BOB"

type bobProc struct {
	*helperProc
	key int32
}

// startFidelityBob starts bob: a copy of the test binary running as
// another user, who adds a key we may not view.
func startFidelityBob(t *testing.T) bobProc {
	t.Helper()
	testenv.RequireRoot(t)
	uid := testUser(t, 1)
	dir, err := os.MkdirTemp("", "watchq-keys-fidelity")
	must(t, "tempdir", err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, "chmod", os.Chmod(dir, 0o755))
	self, err := os.Executable()
	must(t, "executable", err)
	data, err := os.ReadFile(self)
	must(t, "read self", err)
	bin := filepath.Join(dir, "keys.test")
	must(t, "copy self", os.WriteFile(bin, data, 0o755))
	cmd := exec.Command(bin, "-test.run=^TestKeysFidelityBob$", "-test.v=false")
	cmd.Env = append(os.Environ(), fidelityHelperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	must(t, "stdin", err)
	out, err := cmd.StdoutPipe()
	must(t, "stdout", err)
	must(t, "start bob", cmd.Start())
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	h := &helperProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	id, err := strconv.Atoi(h.expectLine(t))
	must(t, "bob's key", err)
	return bobProc{h, int32(id)}
}

// TestKeysFidelityBob is bob's side of the fidelity scenario; it does
// nothing unless $WATCHQ_KEYS_FIDELITY_BOB is set. In a session keyring of
// his own with his user keyring linked (so he possesses his keys), he adds
// a key only he may view, and changes it when told.
func TestKeysFidelityBob(t *testing.T) {
	if os.Getenv(fidelityHelperEnv) == "" {
		t.Skip("helper process only")
	}
	runtime.LockOSThread()
	say := func(f string, a ...any) { fmt.Printf("> "+f+"\n", a...) }
	if _, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); errno != 0 {
		say("join: %v", errno)
		os.Exit(1)
	}
	unix.KeyctlInt(unix.KEYCTL_LINK, unix.KEY_SPEC_USER_KEYRING, unix.KEY_SPEC_SESSION_KEYRING, 0, 0)
	id, err := unix.AddKey("user", "wq-f-bob", []byte("v1"), unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		say("add_key: %v", err)
		os.Exit(1)
	}
	unix.KeyctlSetperm(id, 0x3f010000) // possessor all, user view: nothing for others
	say("%d", id)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "change" {
			unix.KeyctlBuffer(unix.KEYCTL_UPDATE, id, []byte("v2"), 0)
			unix.KeyctlInt(unix.KEYCTL_LINK, id, unix.KEY_SPEC_USER_KEYRING, 0, 0)
			unix.KeyctlSetperm(id, 0x3f030000)
			say("changed")
		}
	}
	unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_USER_KEYRING, 0, 0)
	os.Exit(0)
}

// recordTag converts a test tag.
func recordTag(tag int) record.Tag { return record.Tag(tag) }

// TestTracedFidelity plays the fidelity scenario through the traced backend
// on this machine and compares the stream, record by record, with what the
// guest kernel's own facility gave (testdata/fidelity.kernel, written by
// TestVMFidelity).
func TestTracedFidelity(t *testing.T) {
	testenv.RequireRoot(t)
	want, err := os.ReadFile(fidelityGolden)
	must(t, "golden", err)
	src := openTraced(t)
	got := fidelity(t, src) // this test's goroutine, and its thread, end with it
	compareStreams(t, "traced (host)", got, "kernel (guest)", strings.Split(strings.TrimSpace(string(want)), "\n"))
}

// openTraced opens a traced source, or skips where the tracer cannot run.
func openTraced(t *testing.T) *Source {
	t.Helper()
	_, err := keytrace.ProbeLayout()
	testenv.SkipIfUnsupported(t, "key tracer (BTF)", err)
	src, err := openTracedSource()
	testenv.SkipIfUnsupported(t, "key tracer (BPF on the syscall tracepoints)", err)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func openTracedSource() (*Source, error) {
	return Open(context.Background(), Config{Engine: watchq.NewEngine(watchq.Config{}), Backend: Traced, Interval: time.Hour})
}

// newBenchQueue is a 512-note queue closed with b.
func newBenchQueue(b *testing.B) *watchq.Queue {
	q := watchq.NewQueue()
	if _, err := q.SetSize(512); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close() })
	return q
}

// compareStreams reports every line where two streams differ.
func compareStreams(t *testing.T, an string, a []string, bn string, b []string) {
	t.Helper()
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			t.Errorf("step %d:\n %s: %s\n %s: %s", i, an, x, bn, y)
		}
	}
	if t.Failed() {
		t.Logf("%s stream:\n%s", an, strings.Join(a, "\n"))
	}
}
