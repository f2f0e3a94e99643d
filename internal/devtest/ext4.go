//go:build linux

package devtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/watchq/watchq/internal/testenv"
)

// Ext4Image makes a 16 MiB ext4 image holding d/f00..d/f39 and returns its
// path and the byte range of the inode table block that holds d/f39's
// inode (debugfs imap), which no mount-time read needs: with BadImage, a
// lookup of d/f39 fails with EIO and ext4 reports the error
// (ext4_error_inode_block, "unable to read itable block"), while d/f00
// reads fine.
func Ext4Image(tb testing.TB) (img string, badOff, badLen int64) {
	tb.Helper()
	mkfs := testenv.RequireCommand(tb, "mkfs.ext4")
	debugfs := testenv.RequireCommand(tb, "debugfs")
	dir := tb.TempDir()
	src := filepath.Join(dir, "src", "d")
	if err := os.MkdirAll(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	for i := range 40 {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), []byte("x\n"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	img = filepath.Join(dir, "ext4.img")
	// 4 KiB blocks of 16 inodes of 256 bytes: d/f39 is inode 52, in the
	// inode table's fourth block; no journal, errors=continue (mkfs's
	// default), so an error changes nothing on the read-only mount.
	if out, err := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-I", "256", "-O", "^has_journal", "-E", "lazy_itable_init=0",
		"-d", filepath.Join(dir, "src"), img, "16M").CombinedOutput(); err != nil {
		tb.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	out, err := exec.Command(debugfs, "-R", "imap /d/f39", img).CombinedOutput()
	if err != nil {
		tb.Fatalf("debugfs imap: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`located at block (\d+)`).FindSubmatch(out)
	if m == nil {
		tb.Fatalf("debugfs imap: no block in %q", out)
	}
	blk, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return img, blk * 4096, 4096
}
