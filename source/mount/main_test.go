//go:build linux

package mount

import (
	"testing"

	"github.com/watchq/watchq/internal/devtest"
)

// TestMain holds the host lock for loop devices (the ext4 error test) while
// the package's tests run (see devtest.LockHost).
func TestMain(m *testing.M) { devtest.Main(m) }
