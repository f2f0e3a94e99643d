package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// extraFile is one file to put into the initramfs.
type extraFile struct {
	host  string // file to read on the host ("" when gobin is set)
	guest string // absolute path in the guest
	mode  os.FileMode
	gobin string // Go main package to build static instead of reading host
	dir   string // directory gobin paths starting with "." are relative to
}

// filesConfig is the name of the optional per-package file listing what the
// package's guest tests need in the initramfs.
const filesConfig = "vmtest.files"

// withLibs expands a host binary into itself plus the shared libraries and
// dynamic loader ldd(1) reports, each at the same path in the guest. A static
// binary yields just itself.
func withLibs(bin string) ([]extraFile, error) {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("-bin %s: %w", bin, err)
	}
	files := []extraFile{{host: abs, guest: abs, mode: st.Mode().Perm()}}
	out, err := exec.Command("ldd", abs).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") || strings.Contains(string(out), "statically linked") {
			return files, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", abs, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no file.
		f := strings.Fields(line)
		var lib string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		case len(f) >= 2 && f[1] == "=>" && (len(f) < 3 || f[2] == "not"):
			return nil, fmt.Errorf("ldd %s: library %s not found", abs, f[0])
		default:
			continue
		}
		files = append(files, extraFile{host: lib, guest: lib, mode: 0o755})
	}
	return files, nil
}

// parseFileFlag parses -file HOST:GUEST[:MODE] (MODE octal, default: host's).
func parseFileFlag(s, dir string) (extraFile, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !path.IsAbs(parts[1]) {
		return extraFile{}, fmt.Errorf("-file %q: want HOST:GUEST[:MODE] with an absolute GUEST path", s)
	}
	host := parts[0]
	if !filepath.IsAbs(host) {
		host = filepath.Join(dir, host)
	}
	st, err := os.Stat(host)
	if err != nil {
		return extraFile{}, fmt.Errorf("-file %q: %w", s, err)
	}
	ef := extraFile{host: host, guest: parts[1], mode: st.Mode().Perm()}
	if len(parts) == 3 {
		m, err := strconv.ParseUint(parts[2], 8, 32)
		if err != nil {
			return extraFile{}, fmt.Errorf("-file %q: mode: %w", s, err)
		}
		ef.mode = os.FileMode(m)
	}
	return ef, nil
}

// parseGobinFlag parses -gobin PKG:GUEST.
func parseGobinFlag(s, dir string) (extraFile, error) {
	pkg, guest, ok := strings.Cut(s, ":")
	if !ok || pkg == "" || !path.IsAbs(guest) {
		return extraFile{}, fmt.Errorf("-gobin %q: want PACKAGE:GUEST with an absolute GUEST path", s)
	}
	return extraFile{gobin: pkg, guest: guest, mode: 0o755, dir: dir}, nil
}

// readFilesConfig reads dir/vmtest.files if present. Each non-comment line is
//
//	bin   /usr/bin/keyctl              host binary + its shared libraries
//	file  HOST GUEST [MODE]            any file (HOST relative to dir)
//	gobin PACKAGE GUEST                Go main package built static
func readFilesConfig(dir string) ([]extraFile, error) {
	p := filepath.Join(dir, filesConfig)
	f, err := os.Open(p)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var files []extraFile
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		var fs []extraFile
		var ef extraFile
		switch {
		case fields[0] == "bin" && len(fields) == 2:
			fs, err = withLibs(fields[1])
		case fields[0] == "file" && (len(fields) == 3 || len(fields) == 4):
			ef, err = parseFileFlag(strings.Join(fields[1:], ":"), dir)
			fs = []extraFile{ef}
		case fields[0] == "gobin" && len(fields) == 3:
			ef, err = parseGobinFlag(fields[1]+":"+fields[2], dir)
			fs = []extraFile{ef}
		default:
			err = fmt.Errorf("want 'bin PATH', 'file HOST GUEST [MODE]' or 'gobin PACKAGE GUEST'")
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", p, n, err)
		}
		files = append(files, fs...)
	}
	return files, sc.Err()
}
