// Package cpio writes the "newc" (SVR4, magic 070701) cpio archives the Linux
// kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/
// buffer-format.rst). It writes uncompressed archives, which every kernel
// accepts, so the host needs no kernel tree or cpio(1) at test time.
package cpio

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// Mode bits of a newc header (the S_IF* values of stat(2)).
const (
	ModeDir     = 0o040000
	ModeRegular = 0o100000
	ModeSymlink = 0o120000
	ModeChar    = 0o020000
)

// Writer appends entries to a newc archive. Parent directories are created
// automatically (mode 0755) the first time a path below them is written, and
// each path is written at most once: later duplicates are an error.
type Writer struct {
	w    *bufio.Writer
	ino  uint32
	seen map[string]bool
	err  error
}

// NewWriter returns a Writer that writes the archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriter(w), ino: 1, seen: map[string]bool{}}
}

// clean turns "/a/b/" into "a/b", the form the kernel expects.
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// Has reports whether name was already written.
func (c *Writer) Has(name string) bool { return c.seen[clean(name)] }

// Dir adds a directory.
func (c *Writer) Dir(name string, perm uint32) error {
	name = clean(name)
	if name == "" || c.seen[name] {
		return nil // directories may be requested repeatedly
	}
	if err := c.parents(name); err != nil {
		return err
	}
	return c.entry(name, ModeDir|perm&0o7777, 0, 0, nil)
}

// File adds a regular file with the given contents.
func (c *Writer) File(name string, perm uint32, data []byte) error {
	return c.add(clean(name), ModeRegular|perm&0o7777, 0, 0, data)
}

// Symlink adds a symbolic link name → target.
func (c *Writer) Symlink(name, target string) error {
	return c.add(clean(name), ModeSymlink|0o777, 0, 0, []byte(target))
}

// CharDev adds a character device node, e.g. /dev/console (5, 1), which must
// exist in the initramfs because the kernel opens it for init before any
// devtmpfs is mounted.
func (c *Writer) CharDev(name string, perm uint32, major, minor uint32) error {
	return c.add(clean(name), ModeChar|perm&0o7777, major, minor, nil)
}

func (c *Writer) add(name string, mode, rmajor, rminor uint32, data []byte) error {
	if name == "" {
		return fmt.Errorf("cpio: empty name")
	}
	if c.seen[name] {
		return fmt.Errorf("cpio: %s added twice", name)
	}
	if err := c.parents(name); err != nil {
		return err
	}
	return c.entry(name, mode, rmajor, rminor, data)
}

func (c *Writer) parents(name string) error {
	dir := path.Dir(name)
	if dir == "." || c.seen[dir] {
		return nil
	}
	return c.Dir(dir, 0o755)
}

// entry writes one header, name and data, each padded to 4 bytes.
func (c *Writer) entry(name string, mode, rmajor, rminor uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	c.seen[name] = true
	nlink := uint32(1)
	if mode&0o170000 == ModeDir {
		nlink = 2
	}
	// ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.ino++
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad(len(hdr) + len(name) + 1)
	c.write(data)
	c.pad(len(data))
	return c.err
}

func (c *Writer) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *Writer) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Close writes the TRAILER!!! entry and flushes. It does not close the
// underlying writer.
func (c *Writer) Close() error {
	if err := c.entry("TRAILER!!!", 0, 0, 0, nil); err != nil {
		return err
	}
	return c.w.Flush()
}
