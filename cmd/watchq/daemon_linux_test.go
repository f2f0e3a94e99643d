package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/testenv"
)

// startDaemon runs the real watchqd on a private socket with a policy that
// lets root watch devices, and returns the socket path once stat answers.
func startDaemon(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	return startDaemonConf(t, "user=0 watch=devices\n")
}

// startDaemonConf is startDaemon with the policy conf (watchqd.conf(5)).
func startDaemonConf(t *testing.T, policy string) (string, *exec.Cmd) {
	t.Helper()
	if watchqdErr != nil {
		t.Fatal(watchqdErr)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	conf := filepath.Join(dir, "watchqd.conf")
	if err := os.WriteFile(conf, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(watchqdBin, "-socket", sock, "-config", conf, "-devices", "on")
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("watchqd log:\n%s", log.String())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; {
		if r := run(t, nil, "stat", "--socket", sock); r.code == 0 {
			return sock, cmd
		}
		select {
		case <-exited:
			t.Fatalf("watchqd exited: %s", log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("watchqd did not answer at %s", sock)
		}
	}
}

// statQueue finds the stat row of the queue owned by pid: the column
// names and values.
func statQueue(t *testing.T, out string, pid int) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var head []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "QUEUE" {
			head = f
			continue
		}
		if head != nil && len(f) == len(head) && f[1] == strconv.Itoa(pid) {
			m := map[string]string{}
			for i, h := range head {
				m[h] = f[i]
			}
			return m
		}
	}
	t.Fatalf("no queue of pid %d in stat output:\n%s", pid, out)
	return nil
}

// TestDaemon starts the real watchqd, runs "watchq watch devices" through
// it, checks "watchq stat" (text and JSON) sees the watch's queue, attaches
// and detaches a loop device and checks the BLOCK lines arrive through the
// daemon and the counters move; then stops the daemon, and checks the watch
// reports the removal of its device watch and stat says the daemon is not
// running.
func TestDaemon(t *testing.T) {
	testenv.RequireRoot(t) // the daemon's device source
	sock, daemon := startDaemon(t)

	p := start(t, "watch", "devices", "--socket", sock, "--filter", "block:lifecycle")
	stderr := strings.Join(p.waitReady(), "\n")
	for _, w := range []string{
		"watchq: devices: watchqd at " + sock + " (in-process source not used)",
		"watchq: watching devices tag 4 (watchqd: ",
	} {
		if !strings.Contains(stderr, w) {
			t.Fatalf("stderr lacks %q:\n%s", w, stderr)
		}
	}

	r := run(t, nil, "stat", "--socket", sock)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "watchqd at "+sock+"\nclients ") || !strings.Contains(r.stdout, "device source running") {
		t.Fatalf("stat: exit %d, stdout\n%s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	q := statQueue(t, r.stdout, p.cmd.Process.Pid)
	if q["CAPACITY"] != "256" || q["WATCHES"] != "1" || q["UID"] != "0" {
		t.Errorf("queue row %v, want capacity 256, 1 watch, uid 0", q)
	}

	attachDetach(t, p)

	r = run(t, nil, "stat", "--json", "--socket", sock)
	var js struct {
		Socket  string
		Devices bool
		Queues  int
		List    []map[string]float64 `json:"queue_list"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || r.code != 0 {
		t.Fatalf("stat --json: exit %d, %v:\n%s", r.code, err, r.stdout)
	}
	if js.Socket != sock || !js.Devices || js.Queues < 1 {
		t.Errorf("stat --json: %+v", js)
	}
	found := false
	for _, e := range js.List {
		if int(e["pid"]) == p.cmd.Process.Pid {
			found = true
			if e["posted"] < 2 || e["written"] < 2 || e["capacity"] != 256 {
				t.Errorf("queue %v: want >= 2 records posted and written", e)
			}
		}
	}
	if !found {
		t.Errorf("stat --json has no queue of pid %d:\n%s", p.cmd.Process.Pid, r.stdout)
	}

	// The daemon goes: the device watch ends with a removal record, and
	// the command with status 1 and the message (lifecycle_linux_test.go
	// checks it closely).
	daemon.Process.Signal(syscall.SIGTERM)
	p.waitFor("the removal line", 20*time.Second, func(out, _ []string) bool { return findLine(out, "REMOVAL of watchpoint 00000004", "") != "" })
	if code := p.wait(); code != 1 {
		t.Errorf("watch exit status %d after the daemon went, want 1", code)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		r = run(t, nil, "stat", "--socket", sock)
		if r.code != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stat still answers after SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.code != 1 || !strings.HasPrefix(r.stderr, "watchq: watchqd at "+sock+": not running (") {
		t.Errorf("stat without the daemon: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestStatNoDaemon checks stat's message and exit status when nothing
// listens at the socket.
func TestStatNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{{"stat"}, {"stat", "--json"}} {
		r := run(t, nil, append(args, "--socket", sock)...)
		if want := "watchq: watchqd at " + sock + ": not running (no such file or directory; start it: systemctl start watchqd.socket)\n"; r.code != 1 || r.stderr != want || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1, stderr %q", args, r.code, r.stdout, r.stderr, want)
		}
	}
}
