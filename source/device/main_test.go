package device_test

import (
	"testing"

	"github.com/watchq/watchq/internal/devtest"
)

// TestMain holds the host lock for loop devices and uevents while the
// package's tests run (see devtest.LockHost).
func TestMain(m *testing.M) { devtest.Main(m) }
