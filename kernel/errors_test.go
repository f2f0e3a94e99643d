package kernel

import (
	"errors"
	"runtime"
	"testing"
)

// TestNotLinuxError: what every package's stubs return off Linux says what
// was asked for and where, and matches the one sentinel.
func TestNotLinuxError(t *testing.T) {
	err := error(&NotSupportedError{Op: "keys: Linux keyrings", Missing: MissingLinux})
	if want := "keys: Linux keyrings: not supported on " + runtime.GOOS + " (Linux only)"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	if !errors.Is(err, ErrNotSupported) || errors.Unwrap(err) != nil {
		t.Errorf("%v: matches ErrNotSupported %v, unwraps to %v", err, errors.Is(err, ErrNotSupported), errors.Unwrap(err))
	}
}
