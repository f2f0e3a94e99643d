package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/watchq/watchq/internal/devtest"
)

// watchqBin is the watchq binary TestMain builds; every test runs it as a
// subprocess. watchqdBin is the daemon, built beside it; watchqdErr says
// why it could not be built.
var (
	watchqBin  string
	watchqdBin string
	watchqdErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "watchq-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Tests run the binary as nobody too.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	watchqBin = filepath.Join(dir, "watchq")
	out, err := exec.Command("go", "build", "-o", watchqBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	watchqdBin = filepath.Join(dir, "watchqd")
	if out, err := exec.Command("go", "build", "-o", watchqdBin, "../watchqd").CombinedOutput(); err != nil {
		watchqdErr = fmt.Errorf("go build ../watchqd: %v\n%s", err, out)
	}
	release := devtest.LockHost()
	code := m.Run()
	release()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is a finished watchq run.
type result struct {
	stdout, stderr string
	code           int
}

// run runs watchq to completion with stdin.
func run(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, watchqBin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("watchq %s: %v", strings.Join(args, " "), err)
	}
	return result{out.String(), errb.String(), code}
}

// proc is a running watchq whose output a test follows line by line.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout []string // lines so far
	stderr []string
	more   chan struct{} // gets a token whenever a line arrives
	done   chan struct{} // closed when both streams hit EOF
	err    error         // the wait error, after done
}

// start starts watchq. The process is killed when the test ends if it is
// still running.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(watchqBin, args...))
}

// startCmd is start for a command the test has set up (namespaces,
// credentials).
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	args := cmd.Args[1:]
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, more: make(chan struct{}, 1), done: make(chan struct{})}
	var wg sync.WaitGroup
	follow := func(r io.Reader, dst *[]string) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			*dst = append(*dst, sc.Text())
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
		}
	}
	wg.Add(2)
	go follow(stdout, &p.stdout)
	go follow(stderr, &p.stderr)
	go func() {
		wg.Wait()
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("watchq %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.out(), strings.Join(p.errLines(), "\n"))
		}
	})
	return p
}

func (p *proc) out() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.stdout) == 0 {
		return ""
	}
	return strings.Join(p.stdout, "\n") + "\n"
}

func (p *proc) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stdout...)
}

func (p *proc) errLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stderr...)
}

// waitFor waits until cond holds for the output so far, failing the test
// after timeout or if the process ends first.
func (p *proc) waitFor(what string, timeout time.Duration, cond func(stdout, stderr []string) bool) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		if cond(p.lines(), p.errLines()) {
			return
		}
		select {
		case <-p.more:
		case <-p.done:
			if cond(p.lines(), p.errLines()) {
				return
			}
			p.t.Fatalf("watchq exited (%v) before %s", p.err, what)
		case <-deadline:
			p.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// waitReady waits for the "watchq: watching …" line on stderr and returns
// stderr so far.
func (p *proc) waitReady() []string {
	p.t.Helper()
	p.waitFor("the watching line", 30*time.Second, func(_, stderr []string) bool {
		for _, l := range stderr {
			if strings.HasPrefix(l, "watchq: watching ") {
				return true
			}
		}
		return false
	})
	return p.errLines()
}

// waitLines waits until stdout has at least n lines.
func (p *proc) waitLines(n int) []string {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("%d lines of output", n), 20*time.Second, func(stdout, _ []string) bool { return len(stdout) >= n })
	return p.lines()
}

// wait waits for the process to exit and returns its exit status.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatal("watchq did not exit")
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	return 0
}
