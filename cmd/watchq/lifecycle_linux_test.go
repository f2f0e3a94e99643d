package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq/internal/testenv"
)

// watchqd is a real watchqd a test can stop and start again on one
// socket.
type watchqd struct {
	t          *testing.T
	sock, conf string
	cmd        *exec.Cmd
	exited     chan struct{}
	log        strings.Builder
}

// newWatchqd starts watchqd with its device source and conf's rules.
func newWatchqd(t *testing.T, rules string) *watchqd {
	t.Helper()
	if watchqdErr != nil {
		t.Fatal(watchqdErr)
	}
	dir := t.TempDir()
	d := &watchqd{t: t, sock: filepath.Join(dir, "watchqd.sock"), conf: filepath.Join(dir, "watchqd.conf")}
	if err := os.WriteFile(d.conf, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	t.Cleanup(func() {
		d.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("watchqd log:\n%s", d.log.String())
		}
	})
	return d
}

// start starts the daemon and waits until stat answers.
func (d *watchqd) start() {
	d.t.Helper()
	os.Remove(d.sock)
	d.cmd = exec.Command(watchqdBin, "-socket", d.sock, "-config", d.conf, "-devices", "on")
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(d.cmd, d.exited)
	d.waitAnswer()
}

// waitAnswer waits until stat answers at the socket, failing if the
// daemon exits first.
func (d *watchqd) waitAnswer() {
	d.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); run(d.t, nil, "stat", "--socket", d.sock).code != 0; {
		select {
		case <-d.exited:
			d.t.Fatalf("watchqd exited: %s", d.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("watchqd did not answer at %s", d.sock)
		}
	}
}

// stop sends sig (SIGKILL: the daemon dies without a word) and waits.
func (d *watchqd) stop(sig syscall.Signal) {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(sig)
	<-d.exited
}

// TestWatchDaemonGone: watchqd killed under "watchq watch devices": the
// watch prints the removal of its device watch and exits with status 1,
// saying the daemon went away and how to go on. "watch" (keys and
// devices) ends the same way.
func TestWatchDaemonGone(t *testing.T) {
	testenv.RequireRoot(t) // the daemon's device source
	d := newWatchqd(t, "user=0 watch=devices\n")
	for _, args := range [][]string{
		{"watch", "devices", "--format", "line"},
		{"watch", "--backend", "poll", "--format", "line"},
	} {
		p := start(t, append(args, "--socket", d.sock)...)
		p.waitReady()
		d.stop(syscall.SIGKILL)
		code := p.wait()
		out := p.out()
		if !strings.Contains(out, " removal tag=4: ") {
			t.Errorf("%v: no removal line for the device watch:\n%s", args, out)
		}
		want := "watchq: devices: watchqd at " + d.sock + " went away; start it again (systemctl start watchqd.socket) or watch with --wait to reconnect"
		errs := p.errLines()
		if code != 1 || len(errs) == 0 || errs[len(errs)-1] != want {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and last line %q", args, code, errs, want)
		}
		d.start()
	}
}

// TestWatchWait: under --wait, watchqd stopped and started again: the
// watch says so, marks the gap with a loss record, reconnects, watches
// again with the same tag (a loop device attached after the restart
// shows, with tag 4), and goes on until interrupted.
func TestWatchWait(t *testing.T) {
	testenv.RequireRoot(t)
	d := newWatchqd(t, "user=0 watch=devices\n")
	p := start(t, "watch", "devices", "--wait", "--socket", d.sock, "--filter", "block:lifecycle")
	p.waitReady()
	d.stop(syscall.SIGKILL)
	p.waitFor("the loss line", 20*time.Second, func(out, _ []string) bool { return findLine(out, "-- LOSS --", "") != "" })
	d.start()
	reconnected := "watchq: devices: reconnected to watchqd at " + d.sock + "; watching devices tag 4 again"
	p.waitFor("the reconnection", 20*time.Second, func(_, errs []string) bool { return findLine(errs, reconnected, "") != "" })
	attached, _ := attachDetach(t, p)

	out := p.lines()
	loss := -1
	for i, l := range out {
		switch {
		case strings.HasPrefix(l, "REMOVAL"):
			t.Errorf("removal line %q under --wait", l)
		case strings.HasPrefix(l, "-- LOSS --") && loss < 0:
			loss = i
		case l == attached:
			if loss < 0 || loss > i {
				t.Errorf("attach line %d before the loss line %d", i, loss)
			}
			if !strings.Contains(out[i-1], "ty=000002 sy=82 i=0000041") {
				t.Errorf("attach line after %q, want tag 4 and the lifecycle subtype", out[i-1])
			}
		}
	}
	went := "watchq: devices: watchqd at " + d.sock + " went away; reconnecting (--wait); records meanwhile are lost (loss record)"
	if findLine(p.errLines(), went, "") == "" {
		t.Errorf("stderr lacks %q", went)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(); code != 0 {
		t.Errorf("exit status %d after SIGINT", code)
	}
}

// TestWatchKeysLastRemoval: like keyctl watch on gc, "watchq watch keys"
// ends with status 0 once a removal record has ended its last watch. With
// two keys watched, x unlinked (collected: its removal) leaves the watch
// running -- y's update still prints -- and y invalidated ends it after
// y's removal line.
func TestWatchKeysLastRemoval(t *testing.T) {
	keySession(t)
	x := addKey(t, "user", "watchq-x", "x", unix.KEY_SPEC_SESSION_KEYRING)
	y := addKey(t, "user", "watchq-y", "y", unix.KEY_SPEC_SESSION_KEYRING)
	p := start(t, "watch", "keys", "--backend=poll", "--interval=50ms", "--timeout=60s",
		fmt.Sprintf("%d=5", x), fmt.Sprintf("%d=6", y))
	p.waitReady()

	keyctl(t, "unlink x", unix.KEYCTL_UNLINK, x, unix.KEY_SPEC_SESSION_KEYRING)
	p.waitFor("x's removal", 20*time.Second, func(out, _ []string) bool { return findLine(out, "REMOVAL of watchpoint 00000005", "") != "" })
	if _, err := unix.AddKey("user", "watchq-y", []byte("y2"), unix.KEY_SPEC_SESSION_KEYRING); err != nil {
		t.Fatal(err)
	}
	updated := fmt.Sprintf("KEY %08x change=1[updated] aux=0", y)
	p.waitFor("y's update after x's removal", 20*time.Second, func(out, _ []string) bool { return findLine(out, updated, "") != "" })

	keyctl(t, "invalidate y", unix.KEYCTL_INVALIDATE, y, 0)
	if code := p.wait(); code != 0 {
		t.Errorf("exit status %d after the last removal, want 0", code)
	}
	out := p.lines()
	if len(out) == 0 || out[len(out)-1] != "REMOVAL of watchpoint 00000006" {
		t.Errorf("output does not end with y's removal:\n%s", strings.Join(out, "\n"))
	}
}
