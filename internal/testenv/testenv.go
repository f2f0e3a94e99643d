// Package testenv holds the helpers every watchq test uses to skip when a
// privilege or kernel feature is missing, and to fail instead when the
// environment says the run is strict (WATCHQ_STRICT=1, set by .ci/run).
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// StrictEnv is the environment variable that turns skips into failures.
const StrictEnv = "WATCHQ_STRICT"

// Strict reports whether skips must be failures (WATCHQ_STRICT=1).
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// Skip skips the test with the reason, or fails it when Strict is set.
// Use it for every "this machine cannot run this test" decision, never for
// a test that simply does not apply (those use t.Skip directly).
func Skip(tb testing.TB, format string, args ...any) {
	tb.Helper()
	reason := fmt.Sprintf(format, args...)
	if Strict() {
		tb.Fatalf("%s=1 forbids skipping: %s", StrictEnv, reason)
	}
	tb.Skip(reason)
}

// RequireRoot skips (or fails, in strict mode) unless the test runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Skip(tb, "needs root (euid %d)", os.Geteuid())
	}
}

// RequireCommand skips (or fails) unless the named program is on PATH, and
// returns its path.
func RequireCommand(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(tb, "needs %s on PATH: %v", name, err)
	}
	return p
}

// RequireFile skips (or fails) unless path exists.
func RequireFile(tb testing.TB, path string) {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		Skip(tb, "needs %s: %v", path, err)
	}
}

// SkipIfUnsupported skips (or fails) when err is non-nil, naming what is
// missing. It is the usual guard after a feature probe.
func SkipIfUnsupported(tb testing.TB, what string, err error) {
	tb.Helper()
	if err != nil {
		Skip(tb, "%s not available: %v", what, err)
	}
}
