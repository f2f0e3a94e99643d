//go:build linux

package devtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// Loop is an attached loop device.
type Loop struct {
	Index int
	Path  string // /dev/loopN
	Name  string // loopN
	Dev   uint64 // kernel-internal dev_t (major<<20 | minor)

	fd      int // open and attached, or -1
	removed bool
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
			Dev: record.KernelDev(unix.Major(st.Rdev), unix.Minor(st.Rdev))}
		tb.Cleanup(func() { l.Detach(tb) })
		return l
	}
}

// CreateLoop creates a new, unattached loop device with LOOP_CTL_ADD at the
// first free index from 100 up (loop_add: the kernel sends an add uevent
// for the disk) and returns it. It is removed (LOOP_CTL_REMOVE) when the
// test ends unless Remove was called.
func CreateLoop(tb testing.TB) *Loop {
	tb.Helper()
	testenv.RequireRoot(tb)
	testenv.RequireFile(tb, "/dev/loop-control")
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	testenv.SkipIfUnsupported(tb, "loop devices", err)
	defer unix.Close(ctl)
	for n := 100; n < 1000; n++ {
		_, err := ioctlInt(ctl, unix.LOOP_CTL_ADD, n)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			tb.Fatalf("LOOP_CTL_ADD %d: %v", n, err)
		}
		l := &Loop{Index: n, Path: fmt.Sprintf("/dev/loop%d", n), Name: fmt.Sprintf("loop%d", n), fd: -1}
		var st unix.Stat_t
		if err := unix.Stat(l.Path, &st); err != nil {
			tb.Fatal(err)
		}
		l.Dev = record.KernelDev(unix.Major(st.Rdev), unix.Minor(st.Rdev))
		tb.Cleanup(func() { l.Remove(tb) })
		return l
	}
	tb.Fatal("no free loop index in 100..999")
	return nil
}

// Attach attaches backing to l with LOOP_CONFIGURE.
func (l *Loop) Attach(tb testing.TB, backing string, flags uint32) {
	tb.Helper()
	bfd, err := unix.Open(backing, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(bfd)
	fd, err := unix.Open(l.Path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.IoctlLoopConfigure(fd, &unix.LoopConfig{Fd: uint32(bfd), Info: unix.LoopInfo64{Flags: flags}}); err != nil {
		unix.Close(fd)
		tb.Fatalf("LOOP_CONFIGURE %s: %v", l.Path, err)
	}
	l.fd = fd
}

// Remove deletes a device made by CreateLoop (LOOP_CTL_REMOVE: the kernel
// sends a remove uevent). It is safe to call twice.
func (l *Loop) Remove(tb testing.TB) {
	tb.Helper()
	l.Detach(tb)
	if l.removed {
		return
	}
	l.removed = true
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Error(err)
		return
	}
	defer unix.Close(ctl)
	for range 100 {
		if _, err = ioctlInt(ctl, unix.LOOP_CTL_REMOVE, l.Index); !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		tb.Errorf("LOOP_CTL_REMOVE %d: %v", l.Index, err)
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

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// FailRead reads 4 KiB at off from path with DirectRead until the read
// fails with EIO, the block error a bad range gives, for up to ten
// seconds. Any other outcome does not count: a device node that cannot be
// opened yet (udev still at work under load) fails too, but posts no block
// error.
func FailRead(tb testing.TB, path string, off int64) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := DirectRead(path, off)
		if errors.Is(err, unix.EIO) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("reading %s at %d never failed with EIO (last: %v)", path, off, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DirectRead reads 4 KiB at off from path with O_DIRECT into a page-aligned
// buffer, bypassing the page cache, and returns the read's error.
func DirectRead(path string, off int64) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	_, err = unix.Pread(fd, buf, off)
	return err
}

// ioctlInt is ioctl(fd, req, arg) with an integer argument and result.
func ioctlInt(fd int, req uint, arg int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}
