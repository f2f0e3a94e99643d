//go:build linux

package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/watchq/watchq/internal/testenv"
)

// TestSystemdUnits: systemd/watchqd.service and watchqd.socket load
// cleanly under systemd-analyze verify (ExecStart pointed at a freshly
// built watchqd, since verify checks the binary exists).
func TestSystemdUnits(t *testing.T) {
	sa := testenv.RequireCommand(t, "systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "watchqd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/watchqd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, u := range []string{"watchqd.service", "watchqd.socket"} {
		b, err := os.ReadFile(filepath.Join("..", "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/usr/sbin/watchqd", bin)
		if err := os.WriteFile(filepath.Join(dir, u), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, "watchqd.service"), filepath.Join(dir, "watchqd.socket"))
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
