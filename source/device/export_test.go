//go:build linux

package device

// SetTestHookReceive installs f, called by the uevent goroutine before each
// receive; tests use it to hold the listener while a storm fills the socket.
func SetTestHookReceive(f func()) func() {
	testHookReceive.Store(&f)
	return func() { testHookReceive.Store(nil) }
}
