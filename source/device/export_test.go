//go:build linux

package device

import (
	"github.com/watchq/watchq/source/device/blockerr"
	"github.com/watchq/watchq/source/device/usbreset"
)

// SetTestHookReceive installs f, called by the uevent goroutine before each
// receive; tests use it to hold the listener while a storm fills the socket.
func SetTestHookReceive(f func()) func() {
	testHookReceive.Store(&f)
	return func() { testHookReceive.Store(nil) }
}

// SetTracerOpeners replaces the tracers' constructors until the returned
// function restores them.
func SetTracerOpeners(blk func(blockerr.Config) (*blockerr.Tracer, error), usb func() (*usbreset.Tracer, error)) func() {
	oldBlk, oldUSB := openBlockErr, openUSBReset
	openBlockErr, openUSBReset = blk, usb
	return func() { openBlockErr, openUSBReset = oldBlk, oldUSB }
}
