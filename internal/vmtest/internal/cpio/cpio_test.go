package cpio

import (
	"bytes"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/watchq/watchq/internal/testenv"
)

func TestArchiveListsWithCpioTool(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.CharDev("/dev/console", 0o600, 5, 1))
	must(w.File("/init", 0o755, []byte("#!/bin/sh\n")))
	must(w.File("/a/b/c.txt", 0o644, []byte("hello")))
	must(w.Symlink("/lib64", "lib"))
	if err := w.File("/init", 0o755, nil); err == nil {
		t.Fatal("duplicate /init accepted")
	}
	must(w.Close())
	if buf.Len()%4 != 0 {
		t.Fatalf("archive length %d not 4-aligned", buf.Len())
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("070701")) {
		t.Fatalf("bad magic %q", buf.Bytes()[:6])
	}

	cpioPath := testenv.RequireCommand(t, "cpio")
	cmd := exec.Command(cpioPath, "-it", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -it: %v", err)
	}
	got := strings.Fields(string(out))
	sort.Strings(got)
	want := []string{"a", "a/b", "a/b/c.txt", "dev", "dev/console", "init", "lib64"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("cpio -it lists %v, want %v", got, want)
	}
}
