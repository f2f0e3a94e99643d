package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/watchq/watchq/internal/testenv"
)

func TestWithLibsDynamicBinary(t *testing.T) {
	testenv.RequireCommand(t, "ldd")
	ls := testenv.RequireCommand(t, "ls")
	files, err := withLibs(ls)
	if err != nil {
		t.Fatal(err)
	}
	var libc, loader bool
	for _, f := range files {
		libc = libc || strings.Contains(f.guest, "libc.so")
		loader = loader || strings.Contains(f.guest, "ld-linux")
		if f.host != f.guest {
			t.Errorf("%s: host %s guest %s differ", ls, f.host, f.guest)
		}
	}
	if !libc || !loader {
		t.Fatalf("withLibs(%s) = %+v, want libc and the dynamic loader", ls, files)
	}
}

func TestWithLibsStaticBinary(t *testing.T) {
	testenv.RequireCommand(t, "ldd")
	// The test binary itself is static when built with CGO_ENABLED=0, which
	// is not guaranteed here; build a tiny static file instead: a shell
	// script is "not a dynamic executable" to ldd.
	p := filepath.Join(t.TempDir(), "s")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	files, err := withLibs(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].guest != p {
		t.Fatalf("withLibs(script) = %+v, want just itself", files)
	}
}

func TestReadFilesConfig(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "helper.sh"), []byte("#!/bin/sh\n"), 0o644)
	cfg := "# comment\n\nfile helper.sh /usr/sbin/helper 0755\ngobin ./cmd/x /sbin/request-key\n"
	os.WriteFile(filepath.Join(dir, filesConfig), []byte(cfg), 0o644)
	files, err := readFilesConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("got %+v", files)
	}
	if f := files[0]; f.host != filepath.Join(dir, "helper.sh") || f.guest != "/usr/sbin/helper" || f.mode != 0o755 {
		t.Errorf("file line: %+v", f)
	}
	if f := files[1]; f.gobin != "./cmd/x" || f.guest != "/sbin/request-key" || f.dir != dir {
		t.Errorf("gobin line: %+v", f)
	}

	os.WriteFile(filepath.Join(dir, filesConfig), []byte("copy a b\n"), 0o644)
	if _, err := readFilesConfig(dir); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("bad line: err = %v, want file:line error", err)
	}
	if files, err := readFilesConfig(t.TempDir()); err != nil || files != nil {
		t.Errorf("missing config: %v %v", files, err)
	}
}

func TestChooseAccel(t *testing.T) {
	a, why, err := chooseAccel("tcg")
	if err != nil || a != "tcg" {
		t.Fatalf("tcg: %s %s %v", a, why, err)
	}
	a, why, err = chooseAccel("auto")
	if err != nil || (a != "tcg" && a != "kvm") {
		t.Fatalf("auto: %s %s %v", a, why, err)
	}
	t.Logf("auto → %s (%s)", a, why)
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && a != "tcg" {
		t.Errorf("kvm_pvm host chose %s, want tcg", a)
	}
	if _, _, err := chooseAccel("hax"); err == nil {
		t.Error("accepted -accel hax")
	}
}
