//go:build linux && amd64 && !vmtest

package run_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEdge runs the edge-semantics program under watchq run: every check
// that passes on the real kernel (TestEdgeInGuest) passes here.
func TestEdge(t *testing.T) {
	requireShim(t)
	edge := buildC(t, "edge", "-pthread")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", edge)))
	if res.err != nil || !strings.Contains(res.stdout, " checks, 0 failed\n") {
		t.Fatalf("edge under watchq run: %v\nstdout:\n%s\nstderr:\n%s", res.err, res.stdout, res.stderr)
	}
}

// TestFilterInstalled: PROG runs with no_new_privs and a seccomp filter.
func TestFilterInstalled(t *testing.T) {
	requireShim(t)
	status := buildC(t, "status")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, watchq(ctx, "run", "--always", "--", status))
	if res.err != nil || !strings.Contains(res.stdout, "NoNewPrivs:\t1\n") || !strings.Contains(res.stdout, "Seccomp:\t2\n") {
		t.Fatalf("status under watchq run: %v\n%s%s", res.err, res.stdout, res.stderr)
	}
}

// TestExitStatus: watchq run exits with PROG's status, and by PROG's
// signal.
func TestExitStatus(t *testing.T) {
	requireShim(t)
	status := buildC(t, "status")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, watchq(ctx, "run", "--always", "--", status, "3"))
	var ee *exec.ExitError
	if !errors.As(res.err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("exit 3 under watchq run: %v, want exit status 3", res.err)
	}
	res = runCmd(t, watchq(ctx, "run", "--always", "--", "sh", "-c", "kill -TERM $$"))
	if !errors.As(res.err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("PROG killed by SIGTERM: watchq run ended with %v, want signal: terminated", res.err)
	}
	res = runCmd(t, watchq(ctx, "run", "--always", "--", "/nonexistent/prog"))
	if !errors.As(res.err, &ee) || ee.ExitCode() != 127 || !strings.Contains(res.stderr, "/nonexistent/prog") {
		t.Errorf("PROG missing: %v, stderr %q; want exit status 127 naming it", res.err, res.stderr)
	}
	notExec := filepath.Join(t.TempDir(), "not-executable")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	res = runCmd(t, watchq(ctx, "run", "--always", "--", notExec))
	if !errors.As(res.err, &ee) || ee.ExitCode() != 126 {
		t.Errorf("PROG not executable: %v, stderr %q; want exit status 126", res.err, res.stderr)
	}
}

// TestOtherABIs: i386 calls (int $0x80) are served like native ones, key
// ids resolved through the i386 entry included; x32 numbers are refused
// exactly when the kernel refuses x32.
func TestOtherABIs(t *testing.T) {
	requireShim(t)
	abi := buildC(t, "abi", "-no-pie")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", abi)))
	if res.err != nil || !strings.Contains(res.stdout, " checks, 0 failed\n") {
		t.Fatalf("abi under watchq run: %v\nstdout:\n%s\nstderr:\n%s", res.err, res.stdout, res.stderr)
	}
	t.Logf("%s", res.stdout)
}

// TestUnprivileged: an unprivileged user runs watchq run (FUSE through
// fusermount3) and PROG gets the whole facility.
func TestUnprivileged(t *testing.T) {
	requireShim(t)
	fuseForAll(t)
	edge := buildC(t, "edge", "-pthread")
	const nobody = 65534
	dir, bins := publicCopies(t, nobody, os.Args[0], edge)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := inSession(t, exec.CommandContext(ctx, bins[os.Args[0]], "run", "--always", "--", bins[edge]))
	cmd.Env = append(os.Environ(), cliEnv+"=1", "TMPDIR="+filepath.Join(dir, "tmp"))
	cmd.Dir = dir
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	res := runCmd(t, cmd)
	if res.err != nil || !strings.Contains(res.stdout, " checks, 0 failed\n") {
		t.Fatalf("edge under watchq run as uid %d: %v\nstdout:\n%s\nstderr:\n%s", nobody, res.err, res.stdout, res.stderr)
	}
}

// TestNested: watchq run under watchq run runs PROG as it is: the outer
// supervisor serves it (a second could not install its filter).
func TestNested(t *testing.T) {
	requireShim(t)
	edge := buildC(t, "edge", "-pthread")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", os.Args[0], "run", "--", edge)))
	if res.err != nil || !strings.Contains(res.stdout, " checks, 0 failed\n") {
		t.Fatalf("edge under watchq run under watchq run: %v\nstdout:\n%s\nstderr:\n%s", res.err, res.stdout, res.stderr)
	}
}

// TestForkExec: the filter follows fork and exec: a shell that runs the
// edge program as its child (fork, then exec) gives it the facility.
func TestForkExec(t *testing.T) {
	requireShim(t)
	edge := buildC(t, "edge", "-pthread")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runCmd(t, inSession(t, watchq(ctx, "run", "--always", "--", "sh", "-c", `"$0"; echo "status $?"`, edge)))
	if res.err != nil || !strings.Contains(res.stdout, " checks, 0 failed\n") || !strings.Contains(res.stdout, "status 0\n") {
		t.Fatalf("edge as a shell's child under watchq run: %v\nstdout:\n%s\nstderr:\n%s", res.err, res.stdout, res.stderr)
	}
}
