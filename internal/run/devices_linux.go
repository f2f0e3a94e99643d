//go:build linux && amd64

package run

import "golang.org/x/sys/unix"

// deviceWatch is a queue's watch on the device list, relayed from watchqd.
type deviceWatch struct{}

func (d *deviceWatch) close() {}

// watchDevices serves IocWatchDevices on q for task tid.
func (s *supervisor) watchDevices(_ *kqueue, _ int, _ uint64) unix.Errno {
	return unix.ENOTTY
}
