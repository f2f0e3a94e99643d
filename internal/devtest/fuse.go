//go:build linux

package devtest

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/watchq/watchq/internal/testenv"
)

// badFile is a FUSE file of zeros, or of data's bytes, whose reads fail
// with EIO when they overlap [badOff, badOff+badLen).
type badFile struct {
	fs.Inode
	size, badOff, badLen int64
	data                 io.ReaderAt // nil: zeros
}

var (
	_ fs.NodeOpener    = (*badFile)(nil)
	_ fs.NodeReader    = (*badFile)(nil)
	_ fs.NodeGetattrer = (*badFile)(nil)
)

func (f *badFile) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	// FOPEN_DIRECT_IO: every read reaches Read; the page cache never
	// masks the bad range.
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *badFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(f.size)
	return 0
}

func (f *badFile) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	end := min(off+int64(len(dest)), f.size)
	if off < f.badOff+f.badLen && end > f.badOff {
		return nil, syscall.EIO
	}
	clear(dest)
	if end < off {
		end = off
	}
	if f.data != nil && end > off {
		if _, err := f.data.ReadAt(dest[:end-off], off); err != nil && err != io.EOF {
			return nil, syscall.EIO
		}
	}
	return fuse.ReadResultData(dest[:end-off]), 0
}

// BadFile mounts a FUSE file system (go-fuse, mount(2) directly, no
// fusermount) holding one read-only file of size bytes whose reads
// overlapping [badOff, badOff+badLen) fail with EIO, and returns the file's
// path. It is unmounted when the test ends; detach loop devices on it
// first (register the loop's cleanup after this call).
func BadFile(tb testing.TB, size, badOff, badLen int64) string {
	tb.Helper()
	return mountBadFile(tb, &badFile{size: size, badOff: badOff, badLen: badLen})
}

// BadImage is BadFile serving the bytes of the file image (a filesystem
// image, say) instead of zeros; reads overlapping [badOff, badOff+badLen)
// fail with EIO.
func BadImage(tb testing.TB, image string, badOff, badLen int64) string {
	tb.Helper()
	f, err := os.Open(image)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() }) // registered first, so it runs after the unmount
	st, err := f.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	return mountBadFile(tb, &badFile{size: st.Size(), badOff: badOff, badLen: badLen, data: f})
}

func mountBadFile(tb testing.TB, file *badFile) string {
	tb.Helper()
	testenv.RequireRoot(tb)
	testenv.RequireFile(tb, "/dev/fuse")
	dir := tb.TempDir()
	root := &fs.Inode{}
	srv, err := fs.Mount(dir, root, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "watchq-badfile", Name: "watchq"},
		OnAdd: func(ctx context.Context) {
			root.AddChild("disk", root.NewPersistentInode(ctx, file, fs.StableAttr{Mode: syscall.S_IFREG}), true)
		},
	})
	testenv.SkipIfUnsupported(tb, "FUSE mount", err)
	tb.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
	p := filepath.Join(dir, "disk")
	if _, err := os.Stat(p); err != nil {
		tb.Fatal(err)
	}
	return p
}
