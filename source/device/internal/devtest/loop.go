//go:build linux

package devtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/testenv"
	"golang.org/x/sys/unix"
)

// Loop is an attached loop device.
type Loop struct {
	Index int
	Path  string // /dev/loopN
	Name  string // loopN
	Dev   uint64 // kernel-internal dev_t (major<<20 | minor)
	fd    int
}

// AttachLoop attaches backing to a free loop device with LOOP_CTL_GET_FREE
// and LOOP_CONFIGURE (drivers/block/loop.c), retrying when another process
// grabs the same device first. flags are LO_FLAGS_*. The device is detached
// when the test ends unless Detach was called.
func AttachLoop(tb testing.TB, backing string, flags uint32) *Loop {
	tb.Helper()
	testenv.RequireRoot(tb)
	testenv.RequireFile(tb, "/dev/loop-control")
	mode := unix.O_RDWR
	if flags&unix.LO_FLAGS_READ_ONLY != 0 {
		mode = unix.O_RDONLY
	}
	bfd, err := unix.Open(backing, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open backing file: %v", err)
	}
	defer unix.Close(bfd)
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	testenv.SkipIfUnsupported(tb, "loop devices", err)
	defer unix.Close(ctl)
	for try := 0; ; try++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			tb.Fatalf("LOOP_CTL_GET_FREE: %v", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			tb.Fatalf("open %s: %v", path, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(bfd), Info: unix.LoopInfo64{Flags: flags}}
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if errors.Is(err, unix.EBUSY) && try < 20 {
			unix.Close(fd)
			continue
		}
		if err != nil {
			unix.Close(fd)
			tb.Fatalf("LOOP_CONFIGURE %s: %v", path, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			tb.Fatal(err)
		}
		l := &Loop{Index: n, Path: path, Name: filepath.Base(path), fd: fd,
			Dev: watchq.KernelDev(unix.Major(st.Rdev), unix.Minor(st.Rdev))}
		tb.Cleanup(func() { l.Detach(tb) })
		return l
	}
}

// Detach detaches the device (LOOP_CLR_FD) and closes it. It is safe to
// call twice.
func (l *Loop) Detach(tb testing.TB) {
	tb.Helper()
	if l.fd < 0 {
		return
	}
	// LOOP_CLR_FD fails with EBUSY while another opener (blkid, a
	// partition scan) holds the device; it is brief.
	var err error
	for range 100 {
		if err = unix.IoctlSetInt(l.fd, unix.LOOP_CLR_FD, 0); !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.Close(l.fd)
	l.fd = -1
	if err != nil {
		tb.Errorf("LOOP_CLR_FD %s: %v", l.Path, err)
	}
}

// SysUevent is the device's sysfs uevent file.
func (l *Loop) SysUevent() string { return "/sys/block/" + l.Name + "/uevent" }

// DiskImage writes a size-byte file holding an MBR partition table with one
// Linux partition from sector 2048 to the end, and returns its path.
func DiskImage(tb testing.TB, size int64) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	var mbr [512]byte
	e := mbr[446:462]
	e[4] = 0x83 // Linux
	putLE32(e[8:], 2048)
	putLE32(e[12:], uint32(size/512-2048))
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := f.WriteAt(mbr[:], 0); err != nil {
		tb.Fatal(err)
	}
	return p
}

func putLE32(b []byte, v uint32) { b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24) }
