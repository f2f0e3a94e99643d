package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/watchq/watchq/internal/vmtest/internal/cpio"
	"github.com/watchq/watchq/internal/vmtest/internal/proto"
)

// guestTest is a built test binary and where it goes in the guest.
type guestTest struct {
	pkg     pkgInfo
	hostBin string
}

// writeInitramfs packs /init, the test binaries (each with its package's
// testdata below its working directory), the extra files and the manifest
// into an uncompressed newc cpio archive at out.
func writeInitramfs(out, initBin string, tests []guestTest, extras []extraFile, testArgs, env []string, timeout time.Duration) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := cpio.NewWriter(f)

	// The kernel opens /dev/console for init before devtmpfs exists.
	if err := w.CharDev("/dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	for _, d := range []string{"/proc", "/sys", "/tmp", "/run", "/root", "/watchq/bin", "/usr/bin", "/usr/sbin", "/etc"} {
		if err := w.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := w.File("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")); err != nil {
		return err
	}
	if err := w.File("/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")); err != nil {
		return err
	}
	if err := addHostFile(w, initBin, "/init", 0o755); err != nil {
		return err
	}

	man := proto.Manifest{Env: env, TimeoutSeconds: int(timeout.Seconds())}
	for i, t := range tests {
		bin := fmt.Sprintf("/watchq/tests/%02d.test", i)
		dir := path.Join("/watchq/pkg", t.pkg.ImportPath)
		if err := addHostFile(w, t.hostBin, bin, 0o755); err != nil {
			return err
		}
		if err := w.Dir(dir, 0o755); err != nil {
			return err
		}
		if err := addTree(w, filepath.Join(t.pkg.Dir, "testdata"), path.Join(dir, "testdata")); err != nil {
			return fmt.Errorf("%s testdata: %w", t.pkg.ImportPath, err)
		}
		man.Tests = append(man.Tests, proto.Test{Pkg: t.pkg.ImportPath, Bin: bin, Dir: dir, Args: testArgs})
	}
	// Tests also read the module root's shared testdata through relative
	// paths (../../testdata/...): pack it at the module root's place.
	if len(tests) > 0 {
		if root, mod, ok := moduleOf(tests[0].pkg.Dir); ok {
			dir := path.Join("/watchq/pkg", mod, "testdata")
			if !w.Has(dir) {
				if err := addTree(w, filepath.Join(root, "testdata"), dir); err != nil {
					return fmt.Errorf("module testdata: %w", err)
				}
			}
		}
	}
	for _, e := range extras {
		if w.Has(e.guest) {
			continue // the same library needed by two binaries
		}
		if err := addHostFile(w, e.host, e.guest, uint32(e.mode)); err != nil {
			return err
		}
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	if err := w.File(proto.ManifestPath, 0o644, mb); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return f.Close()
}

// addHostFile copies a host file (following symlinks) to guest.
func addHostFile(w *cpio.Writer, host, guest string, mode uint32) error {
	b, err := os.ReadFile(host)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return w.File(guest, mode, b)
}

// addTree copies the regular files below hostDir (if it exists) to guestDir.
func addTree(w *cpio.Writer, hostDir, guestDir string) error {
	if _, err := os.Stat(hostDir); os.IsNotExist(err) {
		return nil
	}
	return filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(hostDir, p)
		g := path.Join(guestDir, filepath.ToSlash(rel))
		if d.IsDir() {
			return w.Dir(g, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return addHostFile(w, p, g, uint32(info.Mode().Perm()))
	})
}

// moduleOf walks up from dir to the directory holding go.mod and returns
// it with the module path.
func moduleOf(dir string) (root, module string, ok bool) {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
					return d, f[1], true
				}
			}
			return "", "", false
		}
		if filepath.Dir(d) == d {
			return "", "", false
		}
	}
}
