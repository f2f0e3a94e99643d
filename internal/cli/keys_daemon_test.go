package cli

import (
	"errors"
	"testing"

	"github.com/watchq/watchq/kernel"
	"github.com/watchq/watchq/source/keys"
)

// TestDaemonFirst: watch keys goes to watchqd first only for a user other
// than root asking for traced, or for auto on a kernel without the
// facility (unless $WATCHQ_KEYS_BACKEND names another backend).
func TestDaemonFirst(t *testing.T) {
	t.Setenv(keys.BackendEnv, "")
	noFacility := errors.Is(kernel.Probe(), kernel.ErrNotSupported)
	for _, c := range []struct {
		b    keys.Backend
		euid int
		want bool
	}{
		{keys.Traced, 1000, true},
		{keys.Traced, 0, false},
		{keys.Poll, 1000, false},
		{keys.Kernel, 1000, false},
		{keys.Auto, 0, false},
		{keys.Auto, 1000, noFacility},
	} {
		if got := daemonFirst(c.b, c.euid); got != c.want {
			t.Errorf("daemonFirst(%v, %d) = %v, want %v", c.b, c.euid, got, c.want)
		}
	}
	t.Setenv(keys.BackendEnv, "poll")
	if daemonFirst(keys.Auto, 1000) {
		t.Errorf("$%s=poll: daemon first", keys.BackendEnv)
	}
	t.Setenv(keys.BackendEnv, "traced")
	if !daemonFirst(keys.Auto, 1000) {
		t.Errorf("$%s=traced: not daemon first", keys.BackendEnv)
	}
}
