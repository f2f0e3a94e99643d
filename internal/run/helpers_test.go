//go:build linux && amd64 && !vmtest

package run_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/watchq/watchq/internal/testenv"
	"golang.org/x/sys/unix"
)

// fuseForAll makes /dev/fuse usable by every user for the test, as udev
// sets it (0666) where it runs; some machines (containers) leave it 0600.
// fusermount3 opens it as the unprivileged user.
func fuseForAll(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "fusermount3")
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		testenv.Skip(t, "no /dev/fuse: %v", err)
	}
	if st.Mode&0o006 == 0o006 {
		return
	}
	if err := os.Chmod("/dev/fuse", os.FileMode(st.Mode&0o777|0o006)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod("/dev/fuse", os.FileMode(st.Mode&0o777)) })
}

// publicCopies copies files into a new directory every user can read and
// execute (t.TempDir's parent is 0700), with a tmp/ owned by uid, and
// returns the directory and the copies by original path.
func publicCopies(t *testing.T, uid int, files ...string) (string, map[string]string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "watchq-run-public-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o700)
	os.Chown(tmp, uid, uid)
	copies := map[string]string{}
	for i, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, filepath.Base(src))
		if _, dup := copies[dst]; dup || filepath.Base(src) == "tmp" {
			dst += "-" + string(rune('a'+i))
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
		copies[src] = dst
	}
	return dir, copies
}
