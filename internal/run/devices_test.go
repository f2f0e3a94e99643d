//go:build linux && amd64 && !vmtest

package run_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/watchqtest"
)

// TestWatchDevices: a C program's watch_devices() gets watchqd's device
// records, with its own tag, and the ioctl's errors are the documented
// ones.
func TestWatchDevices(t *testing.T) {
	requireShim(t)
	d := watchqtest.StartDaemon(t, "* watch=usb\n")
	prog := buildC(t, "devices", "-Iinclude")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := watchq(ctx, "run", "--always", "--socket", d.Path, "--", prog, "watch")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer pr.Close()
	br := bufio.NewReader(pr)
	var out strings.Builder
	for {
		line, err := br.ReadString('\n')
		out.WriteString(line)
		if err != nil {
			t.Fatalf("devices: %v\n%s%s", err, out.String(), stderr.String())
		}
		if line == "ready\n" {
			break
		}
	}
	if n := d.Devices.Post(watchqtest.Rec(record.USBNotification{Subtype: record.USBDeviceAdd, Name: "3-1"})); n != 1 {
		t.Fatalf("the USB record reached %d queues, want the supervisor's 1", n)
	}
	rest, _ := io.ReadAll(br)
	out.Write(rest)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("devices under watchq run: %v\n%s%s", err, out.String(), stderr.String())
	}
	if !strings.Contains(out.String(), "record 20 type 3 subtype 0 len 20 tag 4 name 3-1\n") || !strings.Contains(out.String(), "\n0 failed\n") {
		t.Fatalf("devices under watchq run:\n%s%s", out.String(), stderr.String())
	}
}

// TestWatchDevicesPolicy: watchqd's policy rules: a user it grants no
// device records gets EACCES, and without watchqd the call is EOPNOTSUPP.
func TestWatchDevicesPolicy(t *testing.T) {
	requireShim(t)
	d := watchqtest.StartDaemon(t, "")
	prog := buildC(t, "devices", "-Iinclude")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, watchq(ctx, "run", "--always", "--socket", d.Path, "--", prog, "denied"))
	if res.err != nil || !strings.Contains(res.stdout, "watch_devices = -1 (Permission denied)") {
		t.Errorf("watch_devices with no grant: %v\n%s%s", res.err, res.stdout, res.stderr)
	}
	res = runCmd(t, watchq(ctx, "run", "--always", "--socket", t.TempDir()+"/none.sock", "--", prog, "denied"))
	if res.err != nil || !strings.Contains(res.stdout, "watch_devices = -1 (Operation not supported)") || !strings.Contains(res.stderr, "need watchqd") {
		t.Errorf("watch_devices without watchqd: %v\n%s%s", res.err, res.stdout, res.stderr)
	}
}
