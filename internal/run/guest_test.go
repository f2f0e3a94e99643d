//go:build linux && amd64 && !vmtest

package run_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/testenv"
)

// The comparisons with the real kernel: the guest half (run_vmtest_test.go)
// runs the programs natively in the vmtest guest, booted here through the
// harness with the programs built on the host; these tests run the same
// programs under watchq run and compare.

var (
	guestOnce sync.Once
	guestDir  string
	guestErr  error
)

// guestArtifacts boots the guest once per test binary with the edge
// program and the kernel's sample, runs the guest half, and returns the
// directory holding what it handed back.
func guestArtifacts(t *testing.T) string {
	t.Helper()
	testenv.RequireCommand(t, "qemu-system-x86_64")
	gobin := testenv.RequireCommand(t, "go")
	edge := buildC(t, "edge", "-pthread")
	status := buildC(t, "status")
	watchTest := watchTestBinary(t)
	guestOnce.Do(func() {
		dir, err := os.MkdirTemp("", "watchq-run-guest-")
		if err != nil {
			guestErr = err
			return
		}
		guestDir = dir
		// A cold kernel build takes minutes; a cached one, none.
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, gobin, "run", "./internal/vmtest/cmd/run", "-v", "-tags", "runguest", "-run", "TestGuest",
			"-file", edge+":"+"/watchq/run/edge:0755",
			"-file", watchTest+":"+"/watchq/run/watch_test:0755",
			"-file", status+":"+"/watchq/run/status:0755",
			"-artifacts", dir, "./internal/run")
		cmd.Dir = filepath.Join("..", "..")
		out, err := cmd.CombinedOutput()
		if err != nil {
			guestErr = fmt.Errorf("vmtest: %v\n%s", err, out)
		}
	})
	if guestErr != nil {
		t.Fatal(guestErr)
	}
	return guestDir
}

// watchTestBinary builds the kernel's samples/watch_queue/watch_test.c,
// unmodified, with gcc -static. The source comes from Debian's
// linux-source package (the guest kernel's), extracted once into the
// vmtest cache.
func watchTestBinary(t *testing.T) string {
	t.Helper()
	series := os.Getenv("WATCHQ_KERNEL_SERIES")
	if series == "" {
		series = "6.12"
	}
	tarball := "/usr/src/linux-source-" + series + ".tar.xz"
	st, err := os.Stat(tarball)
	if err != nil {
		testenv.Skip(t, "needs Debian's linux-source-%s for samples/watch_queue/watch_test.c: %v", series, err)
	}
	cache := os.Getenv("WATCHQ_VMTEST_CACHE")
	if cache == "" {
		cache = "/var/cache/watchq/vmtest"
	}
	dir := filepath.Join(cache, "samples", fmt.Sprintf("%s-%d-%d", series, st.Size(), st.ModTime().Unix()))
	src := filepath.Join(dir, "watch_test.c")
	if _, err := os.Stat(src); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		tmp, err := os.MkdirTemp(dir, "x")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		out, err := exec.Command("tar", "-xJf", tarball, "-C", tmp, "--wildcards", "--strip-components=3", "*/samples/watch_queue/watch_test.c").CombinedOutput()
		if err != nil {
			t.Fatalf("extract watch_test.c from %s: %v: %s", tarball, err, out)
		}
		if err := os.Rename(filepath.Join(tmp, "watch_test.c"), src); err != nil {
			t.Fatal(err)
		}
	}
	gcc := testenv.RequireCommand(t, "gcc")
	cmu.Lock()
	defer cmu.Unlock()
	if p, ok := built["watch_test"]; ok {
		return p
	}
	if cdir == "" {
		d, err := os.MkdirTemp("", "watchq-run-test-")
		if err != nil {
			t.Fatal(err)
		}
		cdir = d
	}
	bin := filepath.Join(cdir, "watch_test")
	if out, err := exec.Command(gcc, "-static", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static watch_test.c: %v\n%s", err, out)
	}
	built["watch_test"] = bin
	return bin
}

// tapLines keeps a check program's "ok"/"not ok" lines and its summary.
func tapLines(out string) []string {
	var l []string
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, "ok ") || strings.HasPrefix(line, "not ok ") || strings.HasSuffix(line, " failed") {
			l = append(l, line)
		}
	}
	return l
}

// TestEdgeInGuest: the edge-semantics program passes natively on the real
// kernel, and prints there exactly what it prints under watchq run here.
func TestEdgeInGuest(t *testing.T) {
	requireShim(t)
	dir := guestArtifacts(t)
	b, err := os.ReadFile(filepath.Join(dir, "edge.out"))
	if err != nil {
		t.Fatal(err)
	}
	guest := tapLines(string(b))
	if len(guest) < 10 || guest[len(guest)-1] != fmt.Sprintf("%d checks, 0 failed", len(guest)-1) {
		t.Fatalf("edge on the real kernel:\n%s", b)
	}
	edge := buildC(t, "edge", "-pthread")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", edge)))
	if res.err != nil {
		t.Fatalf("edge under watchq run: %v\n%s%s", res.err, res.stdout, res.stderr)
	}
	if host := tapLines(res.stdout); !slices.Equal(host, guest) {
		t.Fatalf("edge under watchq run differs from the real kernel's:\nhost:\n%s\nguest:\n%s", strings.Join(host, "\n"), strings.Join(guest, "\n"))
	}
}

// TestSamplesAgainstGuest: the kernel's samples/watch_queue/watch_test.c
// (built unmodified, static) and Debian's `keyctl watch @s`, run under
// watchq run while the scenario changes keys, print what they print on the
// real kernel under the same scenario, line for line, key ids named.
func TestSamplesAgainstGuest(t *testing.T) {
	requireShim(t)
	fuseForAll(t)
	keyctl := testenv.RequireCommand(t, "keyctl")
	dir := guestArtifacts(t)
	watchTest := watchTestBinary(t)
	uid, gid := scenarioCred(t)
	pub, bins := publicCopies(t, int(uid), os.Args[0], watchTest)
	bin := bins[os.Args[0]]
	// As the scenario's own user, keys are watched by polling (no BPF
	// for it); as root, through the traced backend where it loads.
	// keyctl watch @s watches only the scenario's session keyring, so it
	// can run as root beside other tests; the sample also watches @u,
	// which root shares with them.
	for _, c := range []struct {
		name, kind string
		argv       []string
		root       bool
	}{
		{"watch_test", "watch_test", []string{bins[watchTest]}, false},
		{"keyctl", "keyctl", []string{keyctl, "watch", "@s"}, false},
		{"keyctl-as-root", "keyctl", []string{keyctl, "watch", "@s"}, true},
	} {
		kind, argv := c.kind, c.argv
		t.Run(c.name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, "samples-"+kind+".out"))
			if err != nil {
				t.Fatal(err)
			}
			guest := scenarioOutput(t, string(b))
			if len(guest) < 8 {
				t.Fatalf("guest output too short:\n%s", b)
			}
			sock := filepath.Join(pub, "tmp", "sync-"+c.name)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			args := append([]string{"session", "-", bin, kind, sock, bin, "run", "--always", "--sync-socket", sock, "--"}, argv...)
			cmd := exec.CommandContext(ctx, keyctl, args...)
			cmd.Env = append(withoutVar(os.Environ(), cliEnv), scenarioEnv+"=1", "TMPDIR="+filepath.Join(pub, "tmp"))
			cmd.Dir = pub
			cmd.WaitDelay = 10 * time.Second
			if !c.root {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
			}
			res := runCmd(t, cmd)
			if res.err != nil {
				t.Fatalf("scenario under watchq run: %v\n%s%s", res.err, res.stdout, res.stderr)
			}
			host := scenarioOutput(t, res.stdout)
			if !slices.Equal(host, guest) {
				t.Fatalf("%s under watchq run differs from the real kernel's:\nhost:\n%s\nguest:\n%s", kind, strings.Join(host, "\n"), strings.Join(guest, "\n"))
			}
			t.Logf("%s: %d lines, as on the real kernel (%s):\n%s", c.name, len(host), backendOf(res.stderr), strings.Join(host, "\n"))
		})
	}
}

// TestPassthroughInGuest: on the guest's kernel, which has the facility,
// watchq run executes PROG untouched: no seccomp filter, no no_new_privs,
// PROG's exit status.
func TestPassthroughInGuest(t *testing.T) {
	dir := guestArtifacts(t)
	b, err := os.ReadFile(filepath.Join(dir, "passthrough.out"))
	if err != nil {
		t.Fatal(err)
	}
	// (The guest's kernel has no CONFIG_SECCOMP: no Seccomp line.)
	if out := string(b); !strings.Contains(out, "NoNewPrivs:\t0\n") || strings.Contains(out, "Seccomp:\t2") {
		t.Fatalf("PROG under watchq run on the real kernel:\n%s\nwant NoNewPrivs 0 and no filter", out)
	}
}

// backendOf picks the key backend watchq run named on standard error.
func backendOf(stderr string) string {
	for line := range strings.SplitSeq(stderr, "\n") {
		if strings.HasPrefix(line, "watchq run: keys are watched") {
			return strings.TrimPrefix(line, "watchq run: ")
		}
	}
	return "no key backend named"
}

// scenarioOutput is a driver's output with serials replaced by names.
func scenarioOutput(t testing.TB, raw string) []string {
	t.Helper()
	head, body, ok := strings.Cut(raw, "---\n")
	if !ok {
		t.Fatalf("scenario output without ---:\n%s", raw)
	}
	named := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(head), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "name" {
			t.Fatalf("bad name line %q", line)
		}
		id, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			t.Fatalf("bad serial in %q", line)
		}
		// keyctl watch prints serials in decimal, the sample key ids in
		// %08x and aux in decimal.
		named[fmt.Sprintf("%08x", id)] = "<" + f[2] + ">"
		named[f[1]] = "<" + f[2] + ">"
	}
	words := regexp.MustCompile(`[0-9a-f]+`)
	var lines []string
	for line := range strings.SplitSeq(strings.TrimRight(body, "\n"), "\n") {
		lines = append(lines, words.ReplaceAllStringFunc(line, func(w string) string {
			if n, ok := named[w]; ok {
				return n
			}
			return w
		}))
	}
	return lines
}
