package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/internal/testenv"
)

// keySession gives the calling test its own session keyring. The goroutine
// stays locked to its thread for the rest of the test: joining a session
// keyring changes only the calling thread's credentials, and the thread
// (and with it the keyring) is discarded when the test's goroutine ends.
// Processes started from this goroutine fork from this thread and inherit
// the keyring, so watchq's @s is the test's keyring.
func keySession(t *testing.T) int {
	t.Helper()
	testenv.RequireRoot(t) // the poll backend reads every watched key's /proc/keys line
	testenv.RequireFile(t, "/proc/keys")
	runtime.LockOSThread()
	id, err := unix.KeyctlJoinSessionKeyring(fmt.Sprintf("watchq-cli-test-%d", time.Now().UnixNano()))
	if err != nil {
		testenv.Skip(t, "cannot join a new session keyring: %v", err)
	}
	return id
}

func addKey(t *testing.T, typ, desc, payload string, ring int) int {
	t.Helper()
	id, err := unix.AddKey(typ, desc, []byte(payload), ring)
	if err != nil {
		t.Fatalf("add_key %s: %v", desc, err)
	}
	return id
}

func keyctl(t *testing.T, what string, cmd, a2, a3 int) {
	t.Helper()
	if _, err := unix.KeyctlInt(cmd, a2, a3, 0, 0); err != nil {
		t.Fatalf("keyctl %s: %v", what, err)
	}
}

// keyStep is one change and the three lines watchq must print for it.
type keyStep struct {
	what string
	do   func()
	want []string
}

func keyLines(readLen int, sub uint8, tag uint8, key uint32, name string, aux uint32) []string {
	return []string{
		fmt.Sprintf("read() = %d", readLen),
		fmt.Sprintf("NOTIFY[000]: ty=000001 sy=%02x i=%08x", sub, uint32(tag)<<8|16),
		fmt.Sprintf("KEY %08x change=%d[%s] aux=%d", key, sub, name, aux),
	}
}

// TestWatchKeysPoll runs "watchq watch keys --backend=poll" on the test's
// session keyring (tag 1) and one key in it (tag 5), changes them with
// keyctl(2) one step at a time, and checks every printed line.
func TestWatchKeysPoll(t *testing.T) {
	sess := keySession(t)
	x := addKey(t, "user", "watchq-x", "one", unix.KEY_SPEC_SESSION_KEYRING)

	p := start(t, "watch", "keys", "--backend=poll", "--interval=50ms", "--count=6", "--timeout=60s",
		"@s", fmt.Sprintf("%#x=5", x))
	stderr := p.waitReady()
	wantErr := []string{
		// The banner says what the poll backend may coalesce or miss.
		"watchq: keys: poll backend every 50ms (--backend=poll); within one interval it coalesces updates and attribute changes, and misses" +
			" same-payload updates, same-value chown/setperm, an unlink and re-link, keyring_restrict and most invalidations (seen as the gc removal); see docs/keys.md",
		fmt.Sprintf("watchq: watching keys @s %08x tag 1, %#x %08x tag 5; queue 256 notes, filter none", sess, x, x),
	}
	if !slices.Equal(stderr, wantErr) {
		t.Fatalf("stderr\n%s\nwant\n%s", strings.Join(stderr, "\n"), strings.Join(wantErr, "\n"))
	}

	var a, b int
	steps := []keyStep{
		{"update x", func() {
			if _, err := unix.AddKey("user", "watchq-x", []byte("two"), unix.KEY_SPEC_SESSION_KEYRING); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"add a", func() { a = addKey(t, "user", "watchq-a", "a", unix.KEY_SPEC_SESSION_KEYRING) }, nil},
		{"setperm x", func() {
			if err := unix.KeyctlSetperm(x, 0x3f3f0000); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"unlink a", func() { keyctl(t, "unlink", unix.KEYCTL_UNLINK, a, sess) }, nil},
		{"revoke x", func() { keyctl(t, "revoke", unix.KEYCTL_REVOKE, x, 0) }, nil},
		{"add b", func() { b = addKey(t, "user", "watchq-b", "b", unix.KEY_SPEC_SESSION_KEYRING) }, nil},
	}
	var want []string
	for i, s := range steps {
		s.do()
		switch s.what {
		case "update x":
			s.want = keyLines(16, 1, 5, uint32(x), "updated", 0)
		case "add a":
			s.want = keyLines(16, 2, 1, uint32(sess), "linked", uint32(a))
		case "setperm x":
			s.want = keyLines(16, 7, 5, uint32(x), "setattr", 0)
		case "unlink a":
			s.want = keyLines(16, 3, 1, uint32(sess), "unlinked", uint32(a))
		case "revoke x":
			s.want = keyLines(16, 5, 5, uint32(x), "revoked", 0)
		case "add b":
			s.want = keyLines(16, 2, 1, uint32(sess), "linked", uint32(b))
		}
		want = append(want, s.want...)
		got := p.waitLines(3 * (i + 1))
		if !slices.Equal(got, want) {
			t.Fatalf("after %s:\n%s\nwant\n%s", s.what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit status %d after --count 6", code)
	}
	if got := p.lines(); !slices.Equal(got, want) {
		t.Errorf("final output\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestWatchKeysJSONFilter checks --json and --filter end to end: an update
// the filter rejects prints nothing, a link prints one JSON object.
func TestWatchKeysJSONFilter(t *testing.T) {
	sess := keySession(t)
	x := addKey(t, "user", "watchq-x", "one", unix.KEY_SPEC_SESSION_KEYRING)
	p := start(t, "watch", "keys", "--backend=poll", "--interval=50ms", "--count=1", "--timeout=60s",
		"--json", "--filter", "key:linked,unlinked@1", "@s", fmt.Sprint(x))
	p.waitReady()
	if _, err := unix.AddKey("user", "watchq-x", []byte("two"), unix.KEY_SPEC_SESSION_KEYRING); err != nil { // updated, tag 2: filtered out
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // several poll passes
	a := addKey(t, "user", "watchq-a", "a", unix.KEY_SPEC_SESSION_KEYRING)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	lines := p.lines()
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1 JSON object:\n%s", len(lines), p.out())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "key", "ty": 1.0, "sy": 2.0, "info": float64(1<<8 | 16), "tag": 1.0, "len": 16.0,
		"event": "linked", "key_id": float64(uint32(sess)), "aux": float64(a)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (line %s)", k, got[k], v, lines[0])
		}
	}
}

// TestWatchDefault runs "watchq watch keys" and "watchq watch" without
// keys: the session keyring with tag 1 and the user keyring with tag 2, as
// the kernel's sample watches them; "watch" adds devices (tag 4) and says
// where they come from. Other tests may change the user keyring at the
// same time, so only records from tag 1 are selected.
func TestWatchDefault(t *testing.T) {
	for _, args := range [][]string{{"watch", "keys"}, {"watch", "--socket", "/nonexistent/watchqd.sock"}} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			sess := keySession(t)
			user, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, true)
			if err != nil {
				t.Fatal(err)
			}
			p := start(t, append(args, "--interval=50ms", "--count=1", "--timeout=60s", "--filter", "key@1")...)
			stderr := strings.Join(p.waitReady(), "\n")
			// --backend=auto: the kernel backend where the kernel has it,
			// else the traced one where it loads, else the poll backend,
			// and why.
			if !strings.Contains(stderr, "watchq: keys: kernel backend") && !strings.Contains(stderr, "watchq: keys: traced backend (BPF") && !strings.Contains(stderr, "watchq: keys: poll backend every 50ms (kernel: ") {
				t.Errorf("stderr does not say which key backend is used and why:\n%s", stderr)
			}
			if w := fmt.Sprintf("watching keys @s %08x tag 1, @u %08x tag 2", sess, user); !strings.Contains(stderr, w) {
				t.Errorf("stderr lacks %q:\n%s", w, stderr)
			}
			if args[1] == "--socket" {
				if !strings.Contains(stderr, "watchq: devices: ") || !strings.Contains(stderr, "watchqd at /nonexistent/watchqd.sock: not running (no such file or directory; start it: systemctl start watchqd.socket)") {
					t.Errorf("stderr does not say where devices come from and why the daemon is not used:\n%s", stderr)
				}
				if strings.Contains(stderr, "devices: in-process") && !strings.Contains(stderr, ", devices tag 4;") {
					t.Errorf("in-process devices not in the watching line:\n%s", stderr)
				}
			}
			a := addKey(t, "user", "watchq-a", "a", unix.KEY_SPEC_SESSION_KEYRING)
			if code := p.wait(); code != 0 {
				t.Fatalf("exit status %d", code)
			}
			want := keyLines(16, 2, 1, uint32(sess), "linked", uint32(a))
			if got := p.lines(); !slices.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", p.out(), strings.Join(want, "\n"))
			}
		})
	}
}

// TestWatchSignal checks that SIGINT and SIGTERM end a watch cleanly
// (exit status 0, nothing on stderr after the start-up lines).
func TestWatchSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			keySession(t)
			p := start(t, "watch", "keys", "--backend=poll", "--interval=50ms", "@s")
			before := len(p.waitReady())
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := p.wait(); code != 0 {
				t.Errorf("exit status %d after %v", code, sig)
			}
			if after := p.errLines(); len(after) != before {
				t.Errorf("stderr after %v: %q", sig, after[before:])
			}
		})
	}
}

// TestWatchErrors checks failures are reported once, as "watchq: …", with
// the right exit status.
func TestWatchErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"watch", "keys", "--backend=bogus"}, 2, "watchq: --backend \"bogus\": want auto, kernel, traced or poll\n"},
		{[]string{"watch", "keys", "--filter", "key:frobbed"}, 2, "watchq: filter \"key:frobbed\": unknown key subtype \"frobbed\"\n"},
		{[]string{"watch", "keys", "@q"}, 2, ""},
		{[]string{"watch", "keys", "--size", "1000", "--backend=poll"}, 2, "watchq: --size 1000: want 1..512 notes\n"},
		{[]string{"watch", "--bogus"}, 2, "watchq: unknown flag: --bogus\n"},
		{[]string{"watch", "devices", "--socket", "/nonexistent/watchqd.sock", "300"}, 2, "watchq: bad tag \"300\": want 0..255\n"},
	} {
		r := run(t, nil, tc.args...)
		if r.code != tc.code || !strings.HasPrefix(r.stderr, tc.want) || strings.Count(r.stderr, "watchq: ") != 1 {
			t.Errorf("%q: exit %d, stderr %q; want exit %d, stderr starting %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

// TestWatchKernelBackend checks --backend=kernel: on a kernel without the
// facility it fails and says why; on one with it, it starts.
func TestWatchKernelBackend(t *testing.T) {
	r := run(t, nil, "watch", "keys", "--backend=kernel", "--timeout=1s", "@u")
	switch {
	case r.code == 1 && strings.HasPrefix(r.stderr, "watchq: keys: kernel backend unavailable (kernel: "):
	case r.code == 0 && strings.HasPrefix(r.stderr, "watchq: keys: kernel backend (KEYCTL_WATCH_KEY"):
	default:
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestWatchCapture checks --capture: the raw reads decode to the same
// records watch printed.
func TestWatchCapture(t *testing.T) {
	keySession(t)
	capture := filepath.Join(t.TempDir(), "keys.bin")
	p := start(t, "watch", "keys", "--backend=poll", "--interval=50ms", "--count=2", "--timeout=60s", "--capture", capture, "@s")
	p.waitReady()
	addKey(t, "user", "watchq-a", "a", unix.KEY_SPEC_SESSION_KEYRING)
	p.waitLines(3)
	addKey(t, "user", "watchq-b", "b", unix.KEY_SPEC_SESSION_KEYRING)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	r := run(t, nil, "decode", "--read-size", "16", capture)
	if r.code != 0 || r.stdout != p.out() {
		t.Errorf("decode of the capture (exit %d, stderr %q):\n%s\nwatch printed:\n%s", r.code, r.stderr, r.stdout, p.out())
	}
}
