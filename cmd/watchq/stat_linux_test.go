package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/watchq/watchq/internal/testenv"
)

// runAs runs watchq to completion as uid (and gid uid).
func runAs(t *testing.T, uid uint32, args ...string) result {
	t.Helper()
	cmd := exec.Command(watchqBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("watchq %s as uid %d: %v", strings.Join(args, " "), uid, err)
	}
	return result{out.String(), errb.String(), code}
}

// TestStatOwnQueues: an unprivileged user (nobody) holds a queue in one
// process (watchq watch devices) and runs watchq stat in another, through
// the real watchqd: stat lists that queue, in text and JSON, with the
// device source's counters and the per-class counts under one name each;
// another unprivileged uid does not see it; root does.
func TestStatOwnQueues(t *testing.T) {
	testenv.RequireRoot(t) // the daemon's device source, and switching uids
	const nobody, other = 65534, 65533
	sock, _ := startDaemonConf(t, "user=0 watch=devices\nuser=65534 watch=block-lifecycle\n")
	// t.TempDir makes the socket's directory and its parent 0700.
	for _, d := range []string{filepath.Dir(sock), filepath.Dir(filepath.Dir(sock))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(watchqBin, "watch", "devices", "--socket", sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	p := startCmd(t, cmd)
	p.waitReady()
	pid := p.cmd.Process.Pid

	r := runAs(t, nobody, "stat", "--socket", sock)
	if r.code != 0 {
		t.Fatalf("stat as nobody: exit %d, %s", r.code, r.stderr)
	}
	q := statQueue(t, r.stdout, pid)
	if q["UID"] != strconv.Itoa(nobody) || q["WATCHES"] != "1" {
		t.Errorf("nobody's queue row %v, want uid %d and one watch", q, nobody)
	}
	for _, w := range []string{"\ndevice source: uevents_received ", ", spoofed_dropped ", ", socket_overruns ", ", ring_drops ",
		"\nblock-lifecycle ", "\nusb ", "\npublisher ", " QUEUED "} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stat as nobody lacks %q:\n%s", w, r.stdout)
		}
	}

	classHead := false
	for _, l := range strings.Split(r.stdout, "\n") {
		classHead = classHead || strings.Join(strings.Fields(l), " ") == "CLASS POSTED LOST FILTERED DENIED"
	}
	if !classHead {
		t.Errorf("stat as nobody has no CLASS POSTED LOST FILTERED DENIED head:\n%s", r.stdout)
	}

	r = runAs(t, nobody, "stat", "--json", "--socket", sock)
	var js struct {
		Sources map[string]map[string]uint64
		Classes map[string]map[string]uint64
		List    []map[string]any `json:"queue_list"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || r.code != 0 {
		t.Fatalf("stat --json as nobody: exit %d, %v:\n%s", r.code, err, r.stdout)
	}
	if len(js.List) != 1 || js.List[0]["pid"] != float64(pid) {
		t.Errorf("stat --json as nobody: queue_list %v, want the one queue of pid %d", js.List, pid)
	}
	if _, ok := js.List[0]["queued"]; !ok {
		t.Errorf("queue entry without queued: %v", js.List[0])
	}
	if _, ok := js.Sources["device"]["uevents_received"]; !ok {
		t.Errorf("no sources.device.uevents_received:\n%s", r.stdout)
	}
	for _, f := range []string{"posted", "lost", "filtered", "denied"} {
		if _, ok := js.Classes["block-lifecycle"][f]; !ok {
			t.Errorf("no classes.block-lifecycle.%s:\n%s", f, r.stdout)
		}
	}

	// Another uid sees none of nobody's queues; root sees them.
	r = runAs(t, other, "stat", "--socket", sock)
	if r.code != 0 || strings.Contains(r.stdout, " "+strconv.Itoa(pid)+" ") {
		t.Errorf("stat as uid %d: exit %d, shows pid %d:\n%s%s", other, r.code, pid, r.stdout, r.stderr)
	}
	r = run(t, nil, "stat", "--socket", sock)
	if q := statQueue(t, r.stdout, pid); q["UID"] != strconv.Itoa(nobody) {
		t.Errorf("root's stat row %v", q)
	}
}
