//go:build vmtest

package usbreset

import (
	"errors"
	"testing"
	"time"

	"github.com/watchq/watchq"
)

// TestOpenInGuest: the vmtest kernel (CONFIG_USB=y, BTF, BPF trampolines,
// no LSM) must load and attach the fexit program; the device package's
// TestUSBResetRecord drives it with real resets. Close wakes a blocked
// Read with watchq.ErrClosed; a second Close returns nil.
func TestOpenInGuest(t *testing.T) {
	tr, err := Open()
	if err != nil {
		t.Fatalf("Open in the vmtest guest: %v", err)
	}
	if n, err := tr.Drops(); err != nil || n != 0 {
		t.Fatalf("Drops = %d, %v", n, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tr.Read()
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // let Read block; no reset happens
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, watchq.ErrClosed) {
			t.Fatalf("Read after Close = %v, want watchq.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked 10 s after Close")
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}
