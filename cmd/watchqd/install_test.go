package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/internal/testenv"
)

// TestMakeInstall runs `make install DESTDIR=… PREFIX=/usr` and checks what
// it installed: both binaries run, systemd-analyze verify passes on the
// installed units, the shipped config loads, and every man page renders
// with man -l and has an EXIT STATUS section.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries; skipped with -short")
	}
	makeBin := testenv.RequireCommand(t, "make")
	sa := testenv.RequireCommand(t, "systemd-analyze")
	manBin := testenv.RequireCommand(t, "man")
	dest := t.TempDir()
	cmd := exec.Command(makeBin, "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []string{
		"usr/bin/watchq", "usr/sbin/watchqd", "usr/lib/systemd/system/watchqd.service",
		"usr/lib/systemd/system/watchqd.socket", "usr/share/man/man1/watchq.1", "usr/share/man/man5/watchqd.conf.5",
		"usr/share/man/man8/watchqd.8", "usr/share/bash-completion/completions/watchq",
		"usr/share/zsh/vendor-completions/_watchq", "usr/share/fish/vendor_completions.d/watchq.fish",
		"etc/watchq/watchqd.conf",
	} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	for _, b := range []string{"usr/bin/watchq", "usr/sbin/watchqd"} {
		prog := filepath.Base(b)
		if out, err := exec.Command(filepath.Join(dest, b), "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), prog+" ") {
			t.Errorf("%s --version: %v %q", prog, err, out)
		}
	}

	// The installed units name /usr/sbin/watchqd, which exists only under
	// DESTDIR: verify copies that point there (systemd-analyze --root
	// would need a whole system under DESTDIR).
	unitDir := filepath.Join(dest, "usr/lib/systemd/system")
	svc, err := os.ReadFile(filepath.Join(unitDir, "watchqd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(svc, []byte("ExecStart=/usr/sbin/watchqd ")) || !bytes.Contains(svc, []byte("/etc/watchq/watchqd.conf")) {
		t.Errorf("installed unit does not name the installed paths:\n%s", svc)
	}
	vdir := t.TempDir()
	for _, u := range []string{"watchqd.service", "watchqd.socket"} {
		b, err := os.ReadFile(filepath.Join(unitDir, u))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/sbin/watchqd"), []byte(filepath.Join(dest, "usr/sbin/watchqd")))
		if err := os.WriteFile(filepath.Join(vdir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(sa, "verify", "--man=no", filepath.Join(vdir, "watchqd.service"), filepath.Join(vdir, "watchqd.socket")).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	if _, err := policy.Load(filepath.Join(dest, "etc/watchq/watchqd.conf")); err != nil {
		t.Errorf("shipped config: %v", err)
	}

	pages, _ := filepath.Glob(filepath.Join(dest, "usr/share/man/man*/*"))
	if len(pages) < 12 {
		t.Fatalf("only %d man pages installed", len(pages))
	}
	for _, p := range pages {
		c := exec.Command(manBin, "-l", p)
		c.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		out, err := c.Output()
		if err != nil || len(out) == 0 {
			t.Errorf("man -l %s: %v", filepath.Base(p), err)
			continue
		}
		if !bytes.Contains(out, []byte("EXIT STATUS")) && !strings.HasSuffix(p, ".5") {
			t.Errorf("%s has no EXIT STATUS section", filepath.Base(p))
		}
	}
}

// TestExampleConfigsLoad: the shipped config with every commented rule
// turned on, and the example of watchqd.conf(5), load as written.
func TestExampleConfigsLoad(t *testing.T) {
	shipped, err := os.ReadFile("../../etc/watchqd.conf")
	if err != nil {
		t.Fatal(err)
	}
	rule := regexp.MustCompile(`(?m)^#(\S+=\S+|\*)( .*)?$`)
	all := rule.ReplaceAll(shipped, []byte("$1$2"))
	if bytes.Equal(all, shipped) {
		t.Fatal("the shipped config has no commented rules")
	}
	page, err := os.ReadFile("../../man/watchqd.conf.5")
	if err != nil {
		t.Fatal(err)
	}
	ex := regexp.MustCompile(`(?s)\.SH EXAMPLE.*?\.nf\n(.*?)\.fi`).FindSubmatch(page)
	if ex == nil {
		t.Fatal("watchqd.conf.5 has no EXAMPLE block")
	}
	for name, text := range map[string][]byte{"etc/watchqd.conf": shipped, "etc/watchqd.conf, all rules": all, "watchqd.conf(5) EXAMPLE": ex[1]} {
		if _, err := policy.Parse(bytes.NewReader(text), name, nil); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
