package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// guestTag is the build tag of guest tests; their files end in
// vmtestSuffix. Guest tests that only make sense when a host test boots the
// guest with their inputs carry a second tag as well (e.g. internal/run's
// `runguest`), which that host test passes with -tags: a plain `make
// vmtest` neither builds nor lists them.
const (
	guestTag     = "vmtest"
	vmtestSuffix = "_vmtest_test.go"
)

// pkgInfo is one package that has guest tests.
type pkgInfo struct {
	ImportPath string
	Dir        string
}

// goCmd runs the go tool in the module root with CGO disabled, so every
// binary is static and runs in the bare initramfs.
func goCmd(root string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd.Stderr = os.Stderr
	return cmd
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w (is the go tool on PATH?)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module: run from the watchq checkout")
	}
	return filepath.Dir(gomod), nil
}

// guestTags returns the build tags of a guest test build: guestTag and
// the extra ones, a comma-separated list as -tags takes it.
func guestTags(extra string) string {
	if extra == "" {
		return guestTag
	}
	return guestTag + "," + extra
}

// discover lists the packages matching patterns that contain at least one
// *_vmtest_test.go file that builds with tags.
func discover(root, tags string, patterns []string) ([]pkgInfo, error) {
	args := append([]string{"list", "-e", "-tags", tags, "-f",
		"{{.ImportPath}}\t{{.Dir}}\t{{join .TestGoFiles \" \"}} {{join .XTestGoFiles \" \"}}"}, patterns...)
	cmd := goCmd(root, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go list %s: %w", strings.Join(patterns, " "), err)
	}
	var pkgs []pkgInfo
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			continue
		}
		for _, name := range strings.Fields(f[2]) {
			if strings.HasSuffix(name, vmtestSuffix) {
				pkgs = append(pkgs, pkgInfo{ImportPath: f[0], Dir: f[1]})
				break
			}
		}
	}
	return pkgs, nil
}

// buildTest builds the package's guest test binary (go test -c -tags
// vmtest[,extra]).
func buildTest(root, tags string, p pkgInfo, out string) error {
	cmd := goCmd(root, "test", "-c", "-tags", tags, "-o", out, p.ImportPath)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go test -c -tags %s %s: %w", tags, p.ImportPath, err)
	}
	if _, err := os.Stat(out); err != nil {
		return fmt.Errorf("go test -c %s produced no binary (no test files?)", p.ImportPath)
	}
	return nil
}

// buildMain builds a main package (import path or ./relative to dir) static.
func buildMain(root, dir, pkg, out string) error {
	cmd := goCmd(root, "build", "-o", out, pkg)
	if strings.HasPrefix(pkg, ".") {
		cmd.Dir = dir
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}
