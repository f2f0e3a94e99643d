//go:build linux

package daemon_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys"
)

func init() {
	attackRoles["keys-owner"] = keysOwnerRole
	attackRoles["keys-watcher"] = keysWatcherRole
	attackRoles["keys-storm"] = keysStormRole
	attackRoles["keys-gc"] = keysGCRole
}

// requireTraced skips unless the traced key backend loads here (root, BPF,
// BTF, the syscall tracepoints): the daemon's key source needs it.
func requireTraced(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	src, err := keys.Open(context.Background(), keys.Config{Engine: watchq.NewEngine(watchq.Config{}), Backend: keys.Traced})
	testenv.SkipIfUnsupported(t, "the traced key backend", err)
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
}

// TestDaemonKeysTwoUsers: through a real watchqd (the daemon role of this
// binary) and its traced key source, two real unprivileged users. A watcher
// never receives a record about a key it cannot view:
//   - bob's watch on alice's key (View for alice only) is refused, EACCES;
//   - bob's watch on a key of his viewable only by its possessor is
//     refused too (watchqd cannot evaluate possession: it errs on the side
//     of refusing);
//   - bob's watch on his own keyring gets exactly the records of his own
//     changes to it — also after he took user View away, as the kernel
//     keeps posting to a watch set while View held — and nothing of
//     alice's changes to her key, nor of her attempt to link it into his
//     keyring (EACCES: she may not write it, so no LINKED).
func TestDaemonKeysTwoUsers(t *testing.T) {
	requireTraced(t)
	alice, bob := newUser(t, "ka"), newUser(t, "kb")
	e := startDaemon(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if kb, err := e.dial(t).KeyBackend(ctx); err != nil || kb != protocol.KeyBackendTraced {
		t.Fatalf("daemon's key backend %d (%v), want traced", kb, err)
	}
	a := e.spawn(t, alice, "keys-owner")
	ka := strings.Fields(expectPrefix(t, a, "KEY "))[1]
	b := e.spawn(t, bob, "keys-watcher", ka)
	if l := expectPrefix(t, b, "WATCHA "); !strings.HasPrefix(l, "WATCHA ERR "+unix.EACCES.Error()) {
		t.Fatalf("bob watching alice's key: %q, want EACCES", l)
	}
	if l := expectPrefix(t, b, "WATCHP "); !strings.HasPrefix(l, "WATCHP ERR "+unix.EACCES.Error()) || !strings.Contains(l, "possess") {
		t.Fatalf("bob watching his possessor-only key: %q, want EACCES saying why", l)
	}
	br := strings.Fields(expectPrefix(t, b, "WATCHR OK "))[2]
	fmt.Fprintf(a.stdin, "ring %s\n", br)
	if l := a.next(t); l != "CHANGED link EACCES" {
		t.Fatalf("alice: %q, want her link into bob's keyring refused", l)
	}
	fmt.Fprintln(b.stdin, "go")
	kb := strings.Fields(expectPrefix(t, b, "KB "))[1]
	var got []string
	for {
		l := b.next(t)
		if l == "DONE" {
			break
		}
		r := parseRec(t, l)
		k, err := r.Key()
		if err != nil {
			t.Fatalf("bob got a non-key record %x", []byte(r))
		}
		got = append(got, fmt.Sprintf("%s tag%d", k, r.Tag()))
	}
	want := []string{
		"key " + br + " setattr tag2",
		"key " + br + " linked key=" + kb + " tag2",
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("bob's records: %q\nwant exactly %q", got, want)
	}
	for _, g := range got {
		if strings.Contains(g, ka) {
			t.Errorf("bob received a record naming alice's key %s: %q", ka, g)
		}
	}
}

// joinSession gives the calling thread (locked) a new session keyring of
// its own, which it possesses: the test's children otherwise inherit
// root's.
func joinSession() error {
	runtime.LockOSThread()
	_, _, e := unix.RawSyscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// keysOwnerRole is alice: a key only she may view, changed when the parent
// says which keyring is bob's.
func keysOwnerRole(args []string) int {
	say, _ := roleOutput()
	if err := joinSession(); err != nil {
		say("ERR join %v", err)
		return 1
	}
	ar, err := unix.AddKey("keyring", "wq-aring", nil, unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		say("ERR %v", err)
		return 1
	}
	ka, err := unix.AddKey("user", "wq-a-secret", []byte("s1"), ar)
	if err != nil {
		say("ERR %v", err)
		return 1
	}
	unix.KeyctlSetperm(ka, 0x3f010000) // possessor all, user (alice) view; others nothing
	say("KEY %d", ka)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) != 2 || f[0] != "ring" {
			continue
		}
		br, _ := strconv.Atoi(f[1])
		unix.KeyctlBuffer(unix.KEYCTL_UPDATE, ka, []byte("s2"), 0)
		unix.KeyctlSetperm(ka, 0x3f030000)
		unix.KeyctlInt(unix.KEYCTL_SET_TIMEOUT, ka, 3600, 0, 0)
		_, lerr := unix.KeyctlInt(unix.KEYCTL_LINK, ka, br, 0, 0)
		unix.KeyctlInt(unix.KEYCTL_LINK, ka, ar, 0, 0) // re-link into her own
		if errors.Is(lerr, unix.EACCES) {
			say("CHANGED link EACCES")
		} else {
			say("CHANGED link %v", lerr)
		}
	}
	return 0
}

// keysWatcherRole is bob: args socket, alice's key.
func keysWatcherRole(args []string) int {
	say, sayErr := roleOutput()
	if err := joinSession(); err != nil {
		say("ERR join %v", err)
		return 1
	}
	ka, _ := strconv.Atoi(args[1])
	br, err := unix.AddKey("keyring", "wq-bring", nil, unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		say("ERR %v", err)
		return 1
	}
	kp, err := unix.AddKey("user", "wq-b-poss", []byte("p"), unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		say("ERR %v", err)
		return 1
	}
	unix.KeyctlSetperm(kp, 0x3f000000) // possessor everything, user nothing
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, q, step, err := dialQueue(ctx, args[0], 64)
	if err != nil {
		sayErr(step, err)
		return 1
	}
	defer c.Close()
	if err := q.WatchKey(ctx, int32(ka), 1); err != nil {
		sayErr("WATCHA", err)
	} else {
		say("WATCHA OK")
	}
	if err := q.WatchKey(ctx, int32(kp), 3); err != nil {
		sayErr("WATCHP", err)
	} else {
		say("WATCHP OK")
	}
	if err := q.WatchKey(ctx, int32(br), 2); err != nil {
		sayErr("WATCHR", err)
		return 1
	}
	say("WATCHR OK %d", br)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() && in.Text() != "go" {
	}
	unix.KeyctlSetperm(br, 0x3f000000) // user View gone: the watch stays, as the kernel's
	kb, err := unix.AddKey("user", "wq-b", []byte("b1"), br)
	if err != nil {
		say("ERR add %v", err)
		return 1
	}
	say("KB %d", kb)
	for {
		r, err := q.Next(ctx)
		if err != nil {
			sayErr("READ", err)
			return 1
		}
		say("REC %s", hex.EncodeToString(r))
		if k, err := r.Key(); err == nil && k.Subtype == record.KeyLinked && k.KeyID == uint32(br) && k.Aux == uint32(kb) {
			break
		}
	}
	say("DONE")
	return 0
}

// TestDaemonKeysLoss: a storm of updates on a key watched through watchqd
// on a 1-note queue (one 32-note page, as the kernel rounds it) gives
// exactly what the real kernel gives (source/keys/testdata/fidelity.kernel:
// "a updated ×32; loss"): 32 records, one loss record, and the next
// change's record right after it. The pump moves records into the pipe
// while the storm goes on, but the queue counts those the client has not
// read (daemon/inflight.go), so nothing more fits than in one notification
// pipe of 32 notes, and the loss falls where the kernel puts it.
func TestDaemonKeysLoss(t *testing.T) {
	requireTraced(t)
	u := newUser(t, "ks")
	e := startDaemon(t, "")
	c := e.spawn(t, u, "keys-storm")
	lost, _ := strconv.Atoi(strings.Fields(expectPrefix(t, c, "LOST "))[1])
	var lines []string
	for {
		l := c.next(t)
		if l == "END" {
			break
		}
		lines = append(lines, l)
	}
	for {
		l := c.next(t)
		lines = append(lines, l)
		if !strings.HasPrefix(l, "AFTER LOSS") {
			break
		}
	}
	// The child stops reading after the 32nd record; the loss record is
	// what it reads next.
	want := append(slices.Repeat([]string{"UPDATED tag9"}, 32), "AFTER LOSS", "AFTER UPDATED tag9")
	if !slices.Equal(lines, want) || lost != stormUpdates-32 {
		t.Errorf("child read %q, %d lost;\nwant %q, %d lost", lines, lost, want, stormUpdates-32)
	}
}

// stormUpdates is how many updates TestDaemonKeysLoss makes: more than
// the queue (32), the pipe (32 packets) and the pump's buffer hold
// together.
const stormUpdates = 256

// keysStormRole: args socket. stormUpdates updates of a watched key on a 1-note
// queue, read once the daemon has taken them all.
func keysStormRole(args []string) int {
	say, _ := roleOutput()
	if err := joinSession(); err != nil {
		say("ERR join %v", err)
		return 1
	}
	k, err := unix.AddKey("user", "wq-storm", []byte("0"), unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		say("ERR %v", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, q, step, err := dialQueue(ctx, args[0], 1)
	if err != nil {
		say("ERR %s %v", strings.ToLower(step), err)
		return 1
	}
	defer c.Close()
	if err := q.WatchKey(ctx, int32(k), 9); err != nil {
		say("ERR watch %v", err)
		return 1
	}
	for i := range stormUpdates {
		unix.KeyctlBuffer(unix.KEYCTL_UPDATE, k, []byte(strconv.Itoa(i)), 0)
	}
	// Read only once the daemon has posted or lost every update: reading
	// earlier would make room.
	var st0 client.QueueStats
	for {
		st, err := q.Stats(ctx)
		if err != nil {
			say("ERR stats %v", err)
			return 1
		}
		if st.Posted+st.Lost >= stormUpdates {
			st0 = st
			break
		}
		time.Sleep(time.Millisecond)
	}
	say("LOST %d", st0.Lost)
	name := func(r record.Record) string {
		if r.IsLoss() {
			return "LOSS"
		}
		kn, err := r.Key()
		if err != nil || kn.KeyID != uint32(k) {
			return fmt.Sprintf("OTHER %x", []byte(r))
		}
		return fmt.Sprintf("%s tag%d", strings.ToUpper(keyEvent(kn.Subtype)), r.Tag())
	}
	// Every record posted: those the queue took and the loss record.
	for seen := 0; seen < stormUpdates-int(st0.Lost); {
		r, err := q.Next(ctx)
		if err != nil {
			say("ERR read %v", err)
			return 1
		}
		say("%s", name(r))
		if !r.IsLoss() {
			seen++
		}
	}
	say("END")
	unix.KeyctlBuffer(unix.KEYCTL_UPDATE, k, []byte("after"), 0)
	for {
		r, err := q.Next(ctx)
		if err != nil {
			say("ERR read %v", err)
			return 1
		}
		say("AFTER %s", name(r))
		if !r.IsLoss() {
			return 0
		}
	}
}

// keyEvent names a key record subtype.
func keyEvent(sub uint8) string {
	if sub == record.KeyUpdated {
		return "updated"
	}
	return fmt.Sprintf("subtype%d", sub)
}

// TestDaemonKeysGCReturnsWatch: a watch the key's garbage collection ends
// (a removal record) gives its charge back, as the kernel gives back the
// user's nr_watches: with a limit of one watch, a second key can be
// watched once the first was invalidated and collected.
func TestDaemonKeysGCReturnsWatch(t *testing.T) {
	requireTraced(t)
	u := newUser(t, "kg")
	e := startDaemon(t, fmt.Sprintf("limits user=%s watches=1\n", u.name))
	c := e.spawn(t, u, "keys-gc")
	expectPrefix(t, c, "WATCH1 OK")
	if l := expectPrefix(t, c, "WATCH2 "); !strings.HasPrefix(l, "WATCH2 ERR "+unix.EAGAIN.Error()) {
		t.Fatalf("second watch past the limit: %q, want EAGAIN", l)
	}
	expectPrefix(t, c, "REMOVED")
	if l := c.next(t); l != "WATCH2 OK" {
		t.Fatalf("second watch after the first key's gc: %q", l)
	}
}

// keysGCRole: args socket. Watches key 1, fails to watch key 2 (limit),
// invalidates key 1, waits for its removal record, watches key 2.
func keysGCRole(args []string) int {
	say, sayErr := roleOutput()
	if err := joinSession(); err != nil {
		say("ERR join %v", err)
		return 1
	}
	k1, err1 := unix.AddKey("user", "wq-gc-1", []byte("1"), unix.KEY_SPEC_SESSION_KEYRING)
	k2, err2 := unix.AddKey("user", "wq-gc-2", []byte("2"), unix.KEY_SPEC_SESSION_KEYRING)
	if err := errors.Join(err1, err2); err != nil {
		say("ERR %v", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, q, step, err := dialQueue(ctx, args[0], 64)
	if err != nil {
		sayErr(step, err)
		return 1
	}
	defer c.Close()
	if err := q.WatchKey(ctx, int32(k1), 1); err != nil {
		sayErr("WATCH1", err)
		return 1
	}
	say("WATCH1 OK")
	if err := q.WatchKey(ctx, int32(k2), 2); err != nil {
		sayErr("WATCH2", err)
	} else {
		say("WATCH2 OK")
	}
	unix.KeyctlInt(unix.KEYCTL_INVALIDATE, k1, 0, 0, 0)
	for {
		r, err := q.Next(ctx)
		if err != nil {
			sayErr("READ", err)
			return 1
		}
		if r.IsRemoval() {
			break
		}
	}
	say("REMOVED")
	if err := q.WatchKey(ctx, int32(k2), 2); err != nil {
		sayErr("WATCH2", err)
	} else {
		say("WATCH2 OK")
	}
	return 0
}

// dialQueue is a key test role's start: a connection to the daemon at
// addr and a queue of notes. step names what failed: DIAL or QUEUE.
func dialQueue(ctx context.Context, addr string, notes int) (c *client.Client, q *client.Queue, step string, err error) {
	if c, err = client.Dial(ctx, addr); err != nil {
		return nil, nil, "DIAL", err
	}
	if q, err = c.CreateQueue(ctx, notes); err != nil {
		c.Close()
		return nil, nil, "QUEUE", err
	}
	return c, q, "", nil
}
