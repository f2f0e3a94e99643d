package layering

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/watchq/watchq"

// layers parses docs/design.md's ```layers block: lines of a layer number
// and package patterns relative to the module root ("." is the root,
// "dir/..." a subtree).
func layers(t *testing.T) map[string]int {
	t.Helper()
	f, err := os.Open("../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := make(map[string]int)
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "```layers":
			in = true
		case in && line == "```":
			return out
		case in:
			fields := strings.Fields(line)
			n, err := strconv.Atoi(fields[0])
			if err != nil || len(fields) < 2 {
				t.Fatalf("bad layers line %q", line)
			}
			for _, p := range fields[1:] {
				out[p] = n
			}
		}
	}
	t.Fatal("docs/design.md has no ```layers block")
	return nil
}

// layerOf finds pkg's layer: an exact pattern, else the longest "dir/..."
// pattern above it.
func layerOf(ls map[string]int, pkg string) (int, bool) {
	rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
	if rel == "" {
		rel = "."
	}
	if n, ok := ls[rel]; ok {
		return n, true
	}
	for dir := rel; dir != "." && dir != "/"; dir = path.Dir(dir) {
		if n, ok := ls[dir+"/..."]; ok {
			return n, true
		}
	}
	return 0, false
}

func TestImportsFollowTheLayers(t *testing.T) {
	ls := layers(t)
	// Every build configuration the project has: plain, the guest tests'
	// tag, and another system.
	for _, env := range [][]string{{"GOOS=linux"}, {"GOOS=linux", "GOFLAGS=-tags=vmtest"}, {"GOOS=darwin"}} {
		cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports", module+"/...")
		cmd.Env = append(os.Environ(), env...)
		cmd.Stderr = os.Stderr
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v go list: %v", env, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		seen := 0
		for {
			var p struct {
				ImportPath                         string
				Imports, TestImports, XTestImports []string
			}
			if err := dec.Decode(&p); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			seen++
			own, ok := layerOf(ls, p.ImportPath)
			if !ok {
				t.Errorf("%s is in no layer of docs/design.md", p.ImportPath)
				continue
			}
			// Test imports may reach up (a package's tests may use
			// watchqtest); the package itself may not.
			for _, imp := range p.Imports {
				if !strings.HasPrefix(imp, module) {
					continue
				}
				if l, ok := layerOf(ls, imp); ok && l > own {
					t.Errorf("%v: %s (layer %d) imports %s (layer %d)", env, p.ImportPath, own, imp, l)
				}
			}
		}
		if seen < 10 {
			t.Fatalf("%v: go list found only %d packages", env, seen)
		}
	}
}
