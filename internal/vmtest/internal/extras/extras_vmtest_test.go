//go:build vmtest

package extras_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestExtraFiles checks what vmtest.files and the runner put in the guest.
func TestExtraFiles(t *testing.T) {
	// A dynamically linked Debian binary runs: its libraries and the
	// dynamic loader were copied at the paths ldd printed.
	if out, err := exec.Command("/usr/bin/true").CombinedOutput(); err != nil {
		t.Errorf("/usr/bin/true: %v %s", err, out)
	}
	if b, err := os.ReadFile("/etc/watchq-hello.txt"); err != nil || string(b) != "hello from the host\n" {
		t.Errorf("file line: %q %v", b, err)
	}
	// gobin: found through PATH (which includes /sbin).
	if out, err := exec.Command("watchq-hello").Output(); err != nil || !strings.Contains(string(out), "static Go program") {
		t.Errorf("watchq-hello: %q %v", out, err)
	}
	// The working directory holds the package's testdata, as with go test.
	if b, err := os.ReadFile("testdata/hello.txt"); err != nil || string(b) != "hello from the host\n" {
		t.Errorf("testdata: %q %v", b, err)
	}
	if d := os.Getenv("TMPDIR"); d == "" {
		t.Error("TMPDIR unset")
	} else if f, err := os.CreateTemp("", "w"); err != nil {
		t.Errorf("TMPDIR %s not writable: %v", d, err)
	} else {
		f.Close()
	}
}
