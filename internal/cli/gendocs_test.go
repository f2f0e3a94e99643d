package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestManPagesCurrent fails when the committed man pages (man/watchq*.1)
// differ from what the commands generate, ignoring the date in the .TH
// line. Regenerate with: go generate ./cmd/watchq
func TestManPagesCurrent(t *testing.T) {
	dir := t.TempDir()
	if err := GenMan(dir); err != nil {
		t.Fatal(err)
	}
	compareDirs(t, dir, filepath.Join("..", "..", "man"), "watchq*.1", func(s string) string {
		lines := strings.Split(s, "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, ".TH ") {
				// .TH "TITLE" "SECTION" "DATE" "SOURCE" "MANUAL"
				f := strings.Split(l, "\" \"")
				if len(f) == 5 {
					f[2] = "DATE"
				}
				lines[i] = strings.Join(f, "\" \"")
			}
		}
		return strings.Join(lines, "\n")
	})
}

// TestCompletionCurrent fails when the committed completion scripts differ
// from what cobra generates for the commands.
func TestCompletionCurrent(t *testing.T) {
	dir := t.TempDir()
	if err := GenCompletion(dir); err != nil {
		t.Fatal(err)
	}
	compareDirs(t, dir, filepath.Join("..", "..", "completion"), "*", func(s string) string { return s })
}

func compareDirs(t *testing.T, generated, committed, glob string, norm func(string) string) {
	t.Helper()
	gen, _ := filepath.Glob(filepath.Join(generated, glob))
	com, _ := filepath.Glob(filepath.Join(committed, glob))
	names := func(paths []string) []string {
		var n []string
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		slices.Sort(n)
		return n
	}
	if g, c := names(gen), names(com); !slices.Equal(g, c) {
		t.Fatalf("generated %v, committed %v in %s: run go generate ./cmd/watchq", g, c, committed)
	}
	for _, p := range gen {
		want, err := os.ReadFile(filepath.Join(committed, filepath.Base(p)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if norm(string(got)) != norm(string(want)) {
			t.Errorf("%s is stale: run go generate ./cmd/watchq", filepath.Join(committed, filepath.Base(p)))
		}
	}
}
