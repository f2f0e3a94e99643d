package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/fleet"
	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
	"golang.org/x/sys/unix"
)

// startNATS runs a real NATS server with JetStream (file storage in a
// temporary directory) on a loopback port until the test ends.
func startNATS(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, DisableJetStreamBanner: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return fmt.Sprintf("nats://127.0.0.1:%d", s.Addr().(*net.TCPAddr).Port)
}

// waitStream waits until the forwarder (--create-stream) has created the
// stream, which it does once connected, independently of records: a
// consumer started before then is refused (stream not found).
func waitStream(t *testing.T, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.Stream(ctx, fleet.DefaultStream)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s not created: %v", fleet.DefaultStream, err)
		}
	}
}

// TestForwardAndWatchFrom: watchq forward takes device and publisher
// records from watchqd (in-process, the test's fake device source) and
// publishes them; watchq watch --from prints them, in both formats, with
// the host named; forward stops on SIGTERM with status 0.
func TestForwardAndWatchFrom(t *testing.T) {
	d := watchqtest.StartDaemon(t, "* watch=usb,block-errors,0x800001 publish=0x800001\n")
	url := startNATS(t)
	fw := start(t, "forward", "--socket", d.Path, "--to", url, "--class", "usb,block-errors", "--class", "0x800001",
		"--host", "web1", "--boot-id", "boot-1", "--dir", t.TempDir(), "--create-stream")
	fw.waitFor("the forwarder's watch", 30*time.Second, func(_, stderr []string) bool {
		return strings.Contains(strings.Join(stderr, "\n"), `msg="fleet: forwarding"`)
	})
	waitStream(t, url)
	d.Devices.Post(watchqtest.Rec(record.USBNotification{Subtype: record.USBDeviceAdd, Name: "1-1"}))
	d.Devices.Post(watchqtest.Rec(record.BlockNotification{Subtype: record.BlockErrorIO, Dev: 7 << 20, Sector: 0x2a}))
	c, err := client.Dial(context.Background(), d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pub, _ := record.Header{Type: 0x800001, Subtype: 3, Info: record.MakeInfo(16, 0, 0)}.AppendBinary(nil)
	pub = append(pub, "payload!"...)
	if err := c.Publish(context.Background(), pub); err != nil {
		t.Fatal(err)
	}

	r := run(t, nil, "watch", "--from", url, "--count", "3", "--timeout", "30s", "--json")
	if r.code != 0 {
		t.Fatalf("watch --from --json: status %d\n%s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	want := []struct {
		typ, event, subject string
	}{{"usb", "dev-add", "watchq.web1.usb"}, {"block", "io", "watchq.web1.block.error"}, {"user:800001", "", "watchq.web1.pub.800001"}}
	if len(lines) != 3 {
		t.Fatalf("watch --from --json printed %d lines:\n%s", len(lines), r.stdout)
	}
	for i, l := range lines {
		var o struct {
			Host, Boot, Subject, Type, Event string
			Seq                              uint64
			Time                             time.Time
		}
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, l)
		}
		if o.Host != "web1" || o.Boot != "boot-1" || o.Seq != uint64(i+1) || o.Type != want[i].typ || o.Event != want[i].event ||
			o.Subject != want[i].subject || o.Time.IsZero() {
			t.Errorf("line %d: %s", i, l)
		}
	}

	r = run(t, nil, "watch", "--from", url, "--host", "web1", "--class", "block-errors", "--count", "1", "--timeout", "30s")
	if r.code != 0 {
		t.Fatalf("watch --from: status %d\n%s", r.code, r.stderr)
	}
	text := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(text) != 3 || !strings.HasPrefix(text[0], "web1: read() = 24 seq=2 boot=boot-1 time=") ||
		text[1] != "web1: NOTIFY[000]: ty=000002 sy=0a i=00000018" || text[2] != "web1: BLOCK 00700000 e=10[I/O] s=2a" {
		t.Errorf("watch --from text:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "watchq.web1.block.error watchq.web1.loss") {
		t.Errorf("stderr does not name the subject filters: %s", r.stderr)
	}
	r = run(t, nil, "watch", "--from", url, "--class", "usb", "--count", "1", "--timeout", "30s", "--format", "line")
	if f := strings.Fields(strings.TrimSpace(r.stdout)); r.code != 0 || len(f) < 3 || f[1] != "web1" ||
		!strings.HasSuffix(r.stdout, " usb 1-1 dev-add tag=0 seq=1\n") {
		t.Errorf("watch --from --format line: status %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"forward", "--class", "usb"},
		{"forward", "--to", url},
		{"forward", "--to", "http://example.com", "--class", "usb"},
		{"forward", "--to", url, "--class", "keys"},
		{"watch", "--from", url, "--size", "32"},
		{"watch", "--from", url, "--deliver", "sometime"},
	} {
		if r := run(t, nil, args...); r.code != 2 {
			t.Errorf("watchq %s: status %d, want 2\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}

	if err := fw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fw.done:
	case <-time.After(30 * time.Second):
		t.Fatal("forward did not stop on SIGTERM")
	}
	if fw.err != nil {
		t.Errorf("forward exited: %v", fw.err)
	}
	if s := strings.Join(fw.errLines(), "\n"); !strings.Contains(s, "spooled=3 acked=3 dropped=0") {
		t.Errorf("forward's last words:\n%s", s)
	}
}

// TestForwardUnit: systemd/watchq-forward.service loads cleanly under
// systemd-analyze verify (ExecStart pointed at the freshly built watchq),
// runs as its own unprivileged user with no capabilities, and that user
// is declared for sysusers.d.
func TestForwardUnit(t *testing.T) {
	sa := testenv.RequireCommand(t, "systemd-analyze")
	b, err := os.ReadFile(filepath.Join("..", "..", "systemd", "watchq-forward.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"\nUser=watchq-forward\n", "\nCapabilityBoundingSet=\n", "\nNoNewPrivileges=yes\n",
		"\nStateDirectory=watchq/forward\n", "\nConditionPathExists=/etc/watchq/forward.env\n", "\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("watchq-forward.service lacks %q", strings.TrimSpace(want))
		}
	}
	su, err := os.ReadFile(filepath.Join("..", "..", "systemd", "watchq-forward.sysusers"))
	if err != nil || !strings.Contains(string(su), "\nu watchq-forward - ") {
		t.Errorf("watchq-forward.sysusers does not declare the user: %v\n%s", err, su)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "watchq-forward.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/bin/watchq", watchqBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestForwardRealDevices: the real watchqd with its real device source; a
// read-only loop device over a FUSE file whose 4 KiB at badOff fail with
// EIO. watchq forward publishes the loop device's lifecycle record and the
// kernel's block error for the bad range; watch --from prints both, the
// error with the device and sector the kernel reported.
func TestForwardRealDevices(t *testing.T) {
	testenv.RequireRoot(t)
	sock, _ := startDaemon(t)
	url := startNATS(t)
	fw := start(t, "forward", "--socket", sock, "--to", url, "--class", "block-errors,block-lifecycle",
		"--host", "disk-host", "--dir", t.TempDir(), "--create-stream")
	fw.waitFor("the forwarder's watch", 30*time.Second, func(_, stderr []string) bool {
		return strings.Contains(strings.Join(stderr, "\n"), `msg="fleet: forwarding"`)
	})
	waitStream(t, url)
	const badOff = 512 << 10
	loop := devtest.AttachLoop(t, devtest.BadFile(t, 1<<20, badOff, 4096), unix.LO_FLAGS_READ_ONLY)
	devtest.FailRead(t, loop.Path, badOff)
	lc := run(t, nil, "watch", "--from", url, "--host", "disk-host", "--class", "block-lifecycle", "--count", "1", "--timeout", "30s", "--json")
	be := run(t, nil, "watch", "--from", url, "--host", "disk-host", "--class", "block-errors", "--count", "1", "--timeout", "30s", "--json")
	ma, mi := record.SplitKernelDev(loop.Dev)
	dev := fmt.Sprintf(`"dev":"%d:%d"`, ma, mi)
	// Other tests' loop devices may show up first; ours must be there.
	if lc.code != 0 || !strings.Contains(lc.stdout, `"host":"disk-host"`) || !strings.Contains(lc.stdout, `"type":"block"`) {
		t.Errorf("lifecycle: status %d\n%s\n%s", lc.code, lc.stdout, lc.stderr)
	}
	if be.code != 0 || !strings.Contains(be.stdout, dev) || !strings.Contains(be.stdout, fmt.Sprintf(`"sector":%d`, badOff/512)) ||
		!strings.Contains(be.stdout, `"subject":"watchq.disk-host.block.error"`) {
		t.Errorf("block error: status %d, want %s sector %d\n%s\n%s", be.code, dev, badOff/512, be.stdout, be.stderr)
	}
}

// TestForwardWatchqdRestart: the real watchqd stopped and started again
// under watchq forward: the forwarder reconnects, watches again and puts a
// loss record (cause watchqd, count unknown) where it was blind; records
// before and after arrive.
func TestForwardWatchqdRestart(t *testing.T) {
	if watchqdErr != nil {
		t.Fatal(watchqdErr)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "watchqd.sock")
	conf := filepath.Join(dir, "watchqd.conf")
	if err := os.WriteFile(conf, []byte("* watch=0x800001 publish=0x800001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var daemon *exec.Cmd
	startWatchqd := func() {
		t.Helper()
		os.Remove(sock)
		daemon = exec.Command(watchqdBin, "-socket", sock, "-config", conf, "-devices", "off")
		if err := daemon.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); run(t, nil, "stat", "--socket", sock).code != 0; {
			if time.Now().After(deadline) {
				t.Fatal("watchqd did not answer")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stopWatchqd := func() {
		daemon.Process.Signal(syscall.SIGTERM)
		daemon.Wait()
	}
	startWatchqd()
	t.Cleanup(stopWatchqd)
	publish := func(n byte) {
		t.Helper()
		c, err := client.Dial(context.Background(), sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rec, _ := record.Header{Type: 0x800001, Subtype: n, Info: record.MakeInfo(8, 0, 0)}.AppendBinary(nil)
		if err := c.Publish(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	forwarding := func(times int) func(_, stderr []string) bool {
		return func(_, stderr []string) bool {
			return strings.Count(strings.Join(stderr, "\n"), `msg="fleet: forwarding"`) >= times
		}
	}
	url := startNATS(t)
	fw := start(t, "forward", "--socket", sock, "--to", url, "--class", "0x800001", "--host", "h", "--dir", t.TempDir(), "--create-stream")
	fw.waitFor("the forwarder's watch", 30*time.Second, forwarding(1))
	waitStream(t, url)
	publish(1)
	stopWatchqd()
	startWatchqd()
	fw.waitFor("the forwarder's second watch", 30*time.Second, forwarding(2))
	publish(2)

	r := run(t, nil, "watch", "--from", url, "--count", "3", "--timeout", "30s")
	if r.code != 0 {
		t.Fatalf("watch --from: status %d\n%s", r.code, r.stderr)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if !strings.HasPrefix(l, "h: read() = ") {
			lines = append(lines, l)
		}
	}
	want := []string{
		"h: NOTIFY[000]: ty=800001 sy=01 i=00000008", "h: other type",
		"h: NOTIFY[000]: ty=000000 sy=01 i=00000008", "h: -- LOSS -- (records not counted: watchqd)",
		"h: NOTIFY[000]: ty=800001 sy=02 i=00000008", "h: other type",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("watch --from:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
	}
}
