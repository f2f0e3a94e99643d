//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// parseJournal decodes one datagram of journald's native protocol
// (systemd.io/JOURNAL_NATIVE_PROTOCOL): KEY=VALUE lines, or KEY, a
// newline, a little-endian u64 length, the value and a newline.
func parseJournal(t *testing.T, b []byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			t.Fatalf("journal datagram without a final newline: %q", b)
		}
		line := b[:i]
		b = b[i+1:]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			m[string(k)] = string(v)
			continue
		}
		if len(b) < 8 {
			t.Fatalf("binary field %q cut short", line)
		}
		n := binary.LittleEndian.Uint64(b)
		if uint64(len(b)) < 8+n+1 {
			t.Fatalf("binary field %q cut short", line)
		}
		m[string(line)] = string(b[8 : 8+n])
		b = b[8+n+1:]
	}
	return m
}

// TestJournal runs a real watchqd as systemd would start it
// (INVOCATION_ID set, the journal's socket present; the socket is the
// test's, built in with -ldflags -X) and reads its log entries as journald
// would: the start line with its priority and fields, a refused SIGHUP
// reload as an error, the stop line with the signal. Nothing goes to
// stderr.
func TestJournal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds watchqd; skipped with -short")
	}
	dir := t.TempDir()
	jsock := filepath.Join(dir, "journal.sock")
	bin := filepath.Join(dir, "watchqd")
	x := "-X github.com/coreos/go-systemd/v22/journal.journalSocket=" + jsock + " -X github.com/watchq/watchq/internal/watchqd.journalSocket=" + jsock
	if out, err := exec.Command("go", "build", "-ldflags", x, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	j, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: jsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	conf := filepath.Join(dir, "watchqd.conf")
	if err := os.WriteFile(conf, []byte("* watch=0x800001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sdir := filepath.Join(dir, "run")
	if err := os.Mkdir(sdir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", conf, "--devices", "off", "--socket", filepath.Join(sdir, "watchqd.sock"))
	cmd.Env = append(os.Environ(), "INVOCATION_ID=0123456789abcdef0123456789abcdef")
	cmd.Env = append(cmd.Env, "JOURNAL_STREAM=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	next := func(what string) map[string]string {
		t.Helper()
		j.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 65536)
		n, err := j.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v (stderr %q)", what, err, stderr.String())
		}
		return parseJournal(t, buf[:n])
	}
	start := next("the start line")
	for k, v := range map[string]string{"MESSAGE": "watchqd ready", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "watchqd", "CONFIG": conf, "RULES": "1", "SOURCES": "none"} {
		if start[k] != v {
			t.Errorf("start entry %s=%q, want %q (entry %v)", k, start[k], v, start)
		}
	}
	if !strings.HasPrefix(start["VERSION"], "watchqd ") {
		t.Errorf("start entry VERSION=%q", start["VERSION"])
	}

	// A reload of a broken file is an error (priority 3) naming the line.
	if err := os.WriteFile(conf, []byte("* watch=floppies\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	e := next("the reload error")
	if e["PRIORITY"] != "3" || e["MESSAGE"] != "reload failed; keeping the rules in force" || !strings.Contains(e["ERR"], conf+":1:") {
		t.Errorf("reload entry %v", e)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	stop := next("the stop line")
	if stop["MESSAGE"] != "watchqd stopping" || stop["PRIORITY"] != "6" || stop["REASON"] != "signal terminated" || stop["UPTIME"] == "" {
		t.Errorf("stop entry %v", stop)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("watchqd: %v", err)
	}
	if sc := bufio.NewScanner(&stderr); sc.Scan() {
		t.Errorf("stderr under the journal: %q", stderr.String())
	}
}
