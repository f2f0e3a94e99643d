//go:build vmtest

package keys

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/printer"
	"github.com/watchq/watchq/watchqtest"
)

func TestVMProbe(t *testing.T) {
	if err := kernel.Probe(); err != nil {
		t.Fatalf("the vmtest kernel has WATCH_QUEUE and KEY_NOTIFICATIONS, but Probe: %v", err)
	}
	src, _ := openBackend(t, Auto, 0, 256)
	if src.Backend() != Kernel {
		t.Errorf("Auto chose %v", src.Backend())
	}
}

// TestVMScenario runs the keyutils-style sequence through both backends on
// the real kernel, every record checked off, then compares the two streams
// step by step: they may differ only in the steps the fidelity table of
// docs/keys.md names.
func TestVMScenario(t *testing.T) {
	testenv.RequireFile(t, "/sbin/request-key")
	logs := map[Backend][]string{}
	for _, b := range []Backend{Kernel, Poll} {
		t.Run(b.String(), func(t *testing.T) {
			src, q := openBackend(t, b, 0, 256)
			sc := newScenario(t, src, q)
			sc.run(true)
			logs[b] = sc.log
			for _, l := range sc.log {
				t.Log(l)
			}
		})
	}
	k, p := logs[Kernel], logs[Poll]
	if len(k) != len(p) {
		t.Fatalf("step counts differ: kernel %d, poll %d", len(k), len(p))
	}
	documented := []string{"keyctl update, same payload", "invalidate + gc", "set_timeout, same minute"}
	var differ []string
	for i := range k {
		step, _, _ := strings.Cut(k[i], ": ")
		if k[i] != p[i] {
			differ = append(differ, step)
			t.Logf("differs: kernel %q, poll %q", k[i], p[i])
		}
	}
	if !slices.Equal(differ, documented) {
		t.Errorf("steps where poll differs from kernel: %q, documented: %q", differ, documented)
	}
}

// TestVMKernelLoss: kernel loss becomes engine loss. The relay is held off
// while 40 updates hit a 1-note (32 after rounding) pipe; the engine queue
// then gets the 32 records the kernel kept and one loss record.
func TestVMKernelLoss(t *testing.T) {
	src, q := openBackend(t, Kernel, 1, 256)
	ring := newKeyring(t, "wq-loss")
	key := addKey(t, "user", "wq-loss-key", []byte("0"), ring)
	must(t, "setperm", unix.KeyctlSetperm(int(key), permAll))
	must(t, "watch", src.Watch(q, key, 5, nil))
	kb := src.impl.(*kernelBackend)
	kb.relayMu.Lock()
	for i := range 40 {
		_, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(key), []byte(fmt.Sprint(i)), 0)
		must(t, "update", err)
	}
	kb.relayMu.Unlock()
	var got []ev
	sc := newScenario(t, src, q)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && (len(got) == 0 || got[len(got)-1].sub != "loss") {
		src.Sync(context.Background())
		got = append(got, sc.drain()...)
		time.Sleep(10 * time.Millisecond)
	}
	if len(got) != 33 || got[32].sub != "loss" {
		t.Fatalf("got %d records (%v), want 32 UPDATED and a loss", len(got), got)
	}
	for _, e := range got[:32] {
		if e != (ev{"updated", key, 0, 5}) {
			t.Fatalf("record %+v, want updated of %d tag 5", e, key)
		}
	}

	// A tiny engine queue loses on its own: 32 notes, 40 records.
	small := watchq.NewQueue()
	small.SetSize(1)
	defer small.Close()
	must(t, "watch small", src.Watch(small, key, 6, nil))
	for i := range 40 {
		unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(key), []byte(fmt.Sprint(i)), 0)
	}
	src.Sync(context.Background())
	ssc := newScenario(t, src, small)
	got = ssc.drain()
	if len(got) != 33 || got[32].sub != "loss" {
		t.Errorf("small queue: %d records, want 32 and a loss", len(got))
	}
}

// TestVMTwoQueues: two engine queues watching one key each get one copy,
// with their own tags, from the process's single kernel watch.
func TestVMTwoQueues(t *testing.T) {
	for _, b := range []Backend{Kernel, Poll} {
		t.Run(b.String(), func(t *testing.T) {
			src, q1 := openBackend(t, b, 0, 256)
			q2 := watchq.NewQueue()
			q2.SetSize(32)
			defer q2.Close()
			ring := newKeyring(t, "wq-two")
			must(t, "watch 1", src.Watch(q1, ring, 7, nil))
			must(t, "watch 2", src.Watch(q2, ring, 8, nil))
			if n := src.Watched(); n != 1 {
				t.Errorf("Watched() = %d, want one kernel watch", n)
			}
			k := addKey(t, "user", "wq-two-key", []byte("v"), ring)
			src.Sync(context.Background())
			g1 := newScenario(t, src, q1).drain()
			g2 := newScenario(t, src, q2).drain()
			if !slices.Equal(g1, []ev{{"linked", ring, uint32(k), 7}}) || !slices.Equal(g2, []ev{{"linked", ring, uint32(k), 8}}) {
				t.Errorf("queue 1 %v, queue 2 %v", g1, g2)
			}
		})
	}
}

// watchqGuestBin is where vmtest.files puts the watchq binary in the
// guest.
const watchqGuestBin = "/usr/local/bin/watchq"

// followLines starts cmd and sends each line of its stdout (or, with
// stderr, of its standard error too, on errLines) until it ends.
func followLines(t *testing.T, cmd *exec.Cmd, errLines chan<- string) <-chan string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	must(t, "pipe", err)
	if errLines != nil {
		e, err := cmd.StderrPipe()
		must(t, "pipe", err)
		go func() {
			s := bufio.NewScanner(e)
			for s.Scan() {
				errLines <- s.Text()
			}
			close(errLines)
		}()
	} else {
		cmd.Stderr = os.Stderr
	}
	must(t, "start "+cmd.Path, cmd.Start())
	lines := make(chan string, 64)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	return lines
}

// collectUntilEOF gathers lines until the stream ends (the program exited
// on its watch's removal), failing after timeout.
func collectUntilEOF(t *testing.T, what string, lines <-chan string, timeout time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return got
			}
			got = append(got, l)
		case <-deadline:
			t.Fatalf("%s did not exit on the keyring's removal; printed %q", what, got)
		}
	}
}

// after returns the lines after the first one equal to marker.
func after(t *testing.T, what string, lines []string, marker string) []string {
	t.Helper()
	i := slices.Index(lines, marker)
	if i < 0 {
		t.Fatalf("%s never printed the marker %q: %q", what, marker, lines)
	}
	return lines[i+1:]
}

// TestVMKeyctlWatch runs Debian's keyctl watch (keyutils' C client on the
// kernel's own pipe) beside the real watchq binary (watchq watch keys
// --format keyctl, kernel backend) and watchq's kernel backend in process
// (printed with printer.Keyctl) on one keyring, and compares the three
// line for line. keyctl watch and watchq watch keys both exit on the
// keyring's gc.
func TestVMKeyctlWatch(t *testing.T) {
	keyctlBin := testenv.RequireCommand(t, "keyctl")
	testenv.RequireFile(t, watchqGuestBin)
	src, q := openBackend(t, Kernel, 0, 256)
	ring := newKeyring(t, "wq-keyctl")
	must(t, "watch", src.Watch(q, ring, 1, nil))

	// watchq first: its "watching" line says its watch is in place.
	wqErr := make(chan string, 64)
	wq := exec.Command(watchqGuestBin, "watch", "keys", "--backend", "kernel", "--format", "keyctl", fmt.Sprint(ring))
	wqLines := followLines(t, wq, wqErr)
	for l := range wqErr {
		t.Logf("watchq: %s", l)
		if strings.HasPrefix(l, "watchq: watching ") {
			break
		}
	}
	go func() {
		for l := range wqErr {
			t.Logf("watchq: %s", l)
		}
	}()
	kc := exec.Command(keyctlBin, "watch", fmt.Sprint(ring))
	kcLines := followLines(t, kc, nil)
	// keyctl watch has placed its watch when a first change reaches it.
	var kl []string
	for deadline := time.Now().Add(10 * time.Second); len(kl) == 0 && time.Now().Before(deadline); {
		must(t, "setperm", unix.KeyctlSetperm(int(ring), permAll))
		select {
		case l := <-kcLines:
			kl = append(kl, l)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// A marker every stream shows; what each saw before it differs (how
	// many setperms each caught) and is cut off.
	m := addKey(t, "user", "wq-kw-marker", []byte("m"), ring)
	marker := fmt.Sprintf("%d link %d", ring, m)

	a := addKey(t, "user", "wq-kw-a", []byte("1"), ring)
	addKey(t, "user", "wq-kw-a", []byte("2"), ring) // UPDATED goes to a, not the ring
	addKey(t, "user", "wq-kw-b", []byte("1"), ring)
	keyctl(t, "unlink", unix.KEYCTL_UNLINK, int(a), int(ring), 0, 0)
	must(t, "setperm", unix.KeyctlSetperm(int(ring), permAll|0x01))
	keyctl(t, "clear", unix.KEYCTL_CLEAR, int(ring), 0, 0, 0)
	keyctl(t, "invalidate", unix.KEYCTL_INVALIDATE, int(ring), 0, 0, 0)

	// Both programs exit on their watch's removal (tag 1): the ring's gc.
	kl = after(t, "keyctl watch", append(kl, collectUntilEOF(t, "keyctl watch", kcLines, 30*time.Second)...), marker)
	if err := kc.Wait(); err != nil {
		t.Errorf("keyctl watch: %v", err)
	}
	bl := after(t, "watchq", collectUntilEOF(t, "watchq watch keys", wqLines, 30*time.Second), marker)
	if err := wq.Wait(); err != nil {
		t.Errorf("watchq watch keys --format keyctl: %v, want exit status 0 on the last removal", err)
	}
	// watchq's stream in process, in keyctl's format (printer.Keyctl).
	var wl []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		src.Sync(context.Background())
		for _, r := range watchqtest.Drain(t, q) {
			if l, ok := printer.Keyctl(r); ok {
				wl = append(wl, l)
			}
		}
		if len(wl) > 0 && strings.HasSuffix(wl[len(wl)-1], " gc") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wl = after(t, "watchq in process", wl, marker)
	t.Logf("keyctl watch: %q", kl)
	t.Logf("watchq:       %q", bl)
	t.Logf("in process:   %q", wl)
	// link a, link b, unlk a, attr, clr, inv, gc.
	if !slices.Equal(kl, bl) || len(kl) != 7 {
		t.Errorf("keyctl watch printed %q\nwatchq printed      %q", kl, bl)
	}
	if !slices.Equal(kl, wl) {
		t.Errorf("keyctl watch printed %q\nin process gave     %q", kl, wl)
	}
}

// BenchmarkKeysKernelEndToEnd: one KEYCTL_UPDATE through the kernel, the
// notification pipe, the relay and the engine, to a read of the record.
// Under TCG the figure is dominated by emulation; compare it with
// BenchmarkKeysKernelSyscallOnly from the same run.
func BenchmarkKeysKernelEndToEnd(b *testing.B) {
	src, q := openBackend(b, Kernel, 0, 512)
	ring := newKeyring(b, "wq-bench-e2e")
	key := addKey(b, "user", "wq-bench-e2e-key", []byte("v"), ring)
	unix.KeyctlSetperm(int(key), permAll)
	if err := src.Watch(q, key, 1, nil); err != nil {
		b.Fatal(err)
	}
	payload := []byte("v")
	b.ReportAllocs()
	for b.Loop() {
		unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(key), payload, 0)
		if _, err := q.Next(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeysKernelSyscallOnly is the KEYCTL_UPDATE alone, with no watch:
// the baseline BenchmarkKeysKernelEndToEnd adds the relay to.
func BenchmarkKeysKernelSyscallOnly(b *testing.B) {
	ring := newKeyring(b, "wq-bench-base")
	key := addKey(b, "user", "wq-bench-base-key", []byte("v"), ring)
	payload := []byte("v")
	for b.Loop() {
		unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(key), payload, 0)
	}
}

// TestVMOrphanedKernelWatch: when the last engine watch on a key goes
// while the process may not view the key, the kernel refuses
// KEYCTL_WATCH_KEY -1 (EACCES) and keeps its watch. The source must not
// forget it: a later Watch of the key adopts the kernel watch (placing
// another would be EBUSY), and records flow again.
func TestVMOrphanedKernelWatch(t *testing.T) {
	src, q := openBackend(t, Kernel, 0, 64)
	ring := newKeyring(t, "wq-orphan")
	k := addKey(t, "user", "wq-orphan", []byte("1"), ring)
	must(t, "setperm", unix.KeyctlSetperm(int(k), permAll))
	must(t, "watch", src.Watch(q, k, 1, nil))
	must(t, "sync", src.Sync(t.Context()))

	// The queue goes: its watch goes silently, and the relay drops the
	// key at its next record, the SETATTR of this setperm, when View is
	// already gone.
	q.Close()
	must(t, "setperm no view", unix.KeyctlSetperm(int(k), permNoView))
	must(t, "sync", src.Sync(t.Context()))
	if n := src.Watched(); n != 0 {
		t.Fatalf("%d keys watched after the last queue closed, want 0", n)
	}
	must(t, "setperm view", unix.KeyctlSetperm(int(k), permAll))
	must(t, "sync", src.Sync(t.Context()))

	q2 := watchq.NewQueue()
	t.Cleanup(func() { q2.Close() })
	if _, err := q2.SetSize(64); err != nil {
		t.Fatal(err)
	}
	if err := src.Watch(q2, k, 2, nil); err != nil {
		t.Fatalf("Watch after the kernel kept its watch: %v", err)
	}
	must(t, "update", func() error { _, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, int(k), []byte("2"), 0); return err }())
	must(t, "sync", src.Sync(t.Context()))
	if got := drainQueue(t, q2); len(got) != 1 || got[0].sub != "updated" || got[0].key != k || got[0].tag != 2 {
		t.Errorf("second queue: %+v, want one UPDATED of %d with tag 2", got, k)
	}
	must(t, "unwatch", src.Unwatch(q2, k))
	must(t, "sync", src.Sync(t.Context()))
	if got := drainQueue(t, q2); len(got) != 1 || got[0].sub != "removal" {
		t.Errorf("after Unwatch: %+v, want one removal", got)
	}
}
