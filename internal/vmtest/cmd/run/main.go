// Command run is the vmtest runner: it builds the guest tests of the watchq
// module (packages with *_vmtest_test.go files, build tag "vmtest") as static
// test binaries, packs them with the guest /init into an initramfs, boots the
// vmtest kernel (internal/vmtest/build-kernel) under qemu-system-x86_64, streams the
// guest console, serves the guests' host requests (device hot-plug over QMP)
// and exits with the guest tests' status.
//
// Usage:
//
//	go run ./vmtest/cmd/run [flags] [packages] [-- test args]
//
// Packages default to ./... . See docs/testing.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

type options struct {
	kernel    string
	timeout   time.Duration
	verbose   bool
	run       string
	accel     string
	memMB     int
	cpus      int
	bins      listFlag
	files     listFlag
	gobins    listFlag
	qemuArgs  listFlag
	artifacts string
	cmdline   string
	keep      bool
	tags      string
	packages  []string
	testArgs  []string
}

func main() {
	var o options
	flag.StringVar(&o.kernel, "kernel", os.Getenv("WATCHQ_VMTEST_KERNEL"), "bzImage to boot (default: $WATCHQ_VMTEST_KERNEL, else the output of internal/vmtest/build-kernel)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "hard timeout for boot + all guest tests (the kernel build and go builds are not counted)")
	flag.BoolVar(&o.verbose, "v", false, "run guest tests with -test.v")
	flag.StringVar(&o.run, "run", "", "run only guest tests matching this regexp (-test.run)")
	flag.StringVar(&o.accel, "accel", "auto", "qemu accelerator: auto (KVM only where it really works), kvm or tcg")
	flag.IntVar(&o.memMB, "mem", 1024, "guest memory in MiB")
	flag.IntVar(&o.cpus, "smp", 2, "guest CPUs")
	flag.Var(&o.bins, "bin", "host binary to copy into the guest at the same path, with its shared libraries (ldd); repeatable")
	flag.Var(&o.files, "file", "HOST:GUEST[:MODE] file to copy into the guest; repeatable")
	flag.Var(&o.gobins, "gobin", "PACKAGE:GUEST Go main package to build static and install in the guest; repeatable")
	flag.Var(&o.qemuArgs, "qemu-arg", "extra qemu argument; repeatable")
	flag.StringVar(&o.artifacts, "artifacts", "", "directory for files guests hand back with guest.SaveArtifact (default: discard)")
	flag.StringVar(&o.cmdline, "cmdline", "", "extra kernel command line, e.g. loglevel=7 (kernel messages are quiet by default)")
	flag.StringVar(&o.tags, "tags", "", "extra build tags for the guest tests, comma-separated (beside vmtest)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (initramfs, binaries) and print its path")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./vmtest/cmd/run [flags] [packages] [-- test args]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	for i, a := range args {
		if a == "--" {
			o.testArgs = args[i+1:]
			args = args[:i]
			break
		}
	}
	o.packages = args
	if len(o.packages) == 0 {
		o.packages = []string{"./..."}
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "vmtest: "+format+"\n", args...)
}

func run(o options) error {
	t0 := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if _, err := exec.LookPath(qemuBinary); err != nil {
		return fmt.Errorf("%s not found: apt-get install qemu-system-x86", qemuBinary)
	}
	accel, why, err := chooseAccel(o.accel)
	if err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}

	kernel := o.kernel
	if kernel == "" {
		kernel, err = buildKernel(ctx, root)
		if err != nil {
			return err
		}
	}
	if _, err := os.Stat(kernel); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	tKernel := time.Now()

	work, err := os.MkdirTemp("", "watchq-vmtest-")
	if err != nil {
		return err
	}
	if o.keep {
		logf("work directory %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	pkgs, err := discover(root, guestTags(o.tags), o.packages)
	if err != nil {
		return err
	}
	if len(pkgs) == 0 {
		return fmt.Errorf("no package among %s has *%s files", strings.Join(o.packages, " "), vmtestSuffix)
	}

	// Extra files: flags, then each package's vmtest.files.
	var extras []extraFile
	for _, b := range o.bins {
		fs, err := withLibs(b)
		if err != nil {
			return err
		}
		extras = append(extras, fs...)
	}
	for _, f := range o.files {
		ef, err := parseFileFlag(f, ".")
		if err != nil {
			return err
		}
		extras = append(extras, ef)
	}
	for _, g := range o.gobins {
		ef, err := parseGobinFlag(g, ".")
		if err != nil {
			return err
		}
		extras = append(extras, ef)
	}
	for _, p := range pkgs {
		fs, err := readFilesConfig(p.Dir)
		if err != nil {
			return err
		}
		extras = append(extras, fs...)
	}

	// Build /init, the test binaries and the gobin extras, all static.
	initBin := filepath.Join(work, "init")
	if err := buildMain(root, root, "github.com/watchq/watchq/internal/vmtest/cmd/init", initBin); err != nil {
		return err
	}
	var tests []guestTest
	for i, p := range pkgs {
		out := filepath.Join(work, fmt.Sprintf("%02d.test", i))
		logf("building %s", p.ImportPath)
		if err := buildTest(root, guestTags(o.tags), p, out); err != nil {
			return err
		}
		tests = append(tests, guestTest{pkg: p, hostBin: out})
	}
	for i := range extras {
		if e := &extras[i]; e.gobin != "" {
			e.host = filepath.Join(work, fmt.Sprintf("gobin-%d", i))
			if err := buildMain(root, e.dir, e.gobin, e.host); err != nil {
				return err
			}
		}
	}

	var testArgs []string // /init adds -test.timeout from the manifest
	if o.verbose {
		testArgs = append(testArgs, "-test.v")
	}
	if o.run != "" {
		testArgs = append(testArgs, "-test.run="+o.run)
	}
	testArgs = append(testArgs, o.testArgs...)
	initrd := filepath.Join(work, "initramfs.cpio")
	// Host settings that guest tests must see: WATCHQ_STRICT turns
	// testenv skips into failures inside the guest too.
	var guestEnv []string
	for _, k := range []string{"WATCHQ_STRICT"} {
		if v, ok := os.LookupEnv(k); ok {
			guestEnv = append(guestEnv, k+"="+v)
		}
	}
	if err := writeInitramfs(initrd, initBin, tests, extras, testArgs, guestEnv, o.timeout); err != nil {
		return err
	}
	st, _ := os.Stat(initrd)
	tBuilt := time.Now()
	logf("%d guest test package(s), initramfs %.1f MiB, built in %.1fs", len(tests), float64(st.Size())/(1<<20), tBuilt.Sub(tKernel).Seconds())

	// Control channel: qemu connects to our listener as a socket client.
	ctlSock := filepath.Join(work, "ctl.sock")
	ln, err := net.Listen("unix", ctlSock)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer ln.Close()
	vm := vmConfig{
		kernel: kernel, initrd: initrd, accel: accel, memMB: o.memMB, cpus: o.cpus,
		qmpSock: filepath.Join(work, "qmp.sock"), ctlSock: ctlSock,
		extraArgs: o.qemuArgs, cmdline: o.cmdline,
	}
	logf("booting %s with %s (%s)", kernel, accel, why)

	// The hard timeout covers the guest only: a cold kernel build (~13 min)
	// must not eat into it.
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	ctl := &controller{workDir: work, artifacts: o.artifacts, storage: map[string]storageDev{}, logf: logf}
	qmpReady := make(chan error, 1)
	res, err := runQEMU(ctx, vm, os.Stdout, func() {
		go func() {
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			defer dcancel()
			q, err := dialQMP(dctx, vm.qmpSock)
			if err != nil {
				qmpReady <- err
				return
			}
			ctl.qmp = q
			qmpReady <- nil
			ctl.serve(ctx, ln)
		}()
	})
	ln.Close()
	if err != nil {
		return err
	}
	select {
	case qerr := <-qmpReady:
		if qerr != nil {
			logf("QMP: %v", qerr)
		}
	default:
	}
	logf("boot %.1fs, guest run %.1fs, total %.1fs (kernel step %.1fs)",
		res.bootTime.Seconds(), res.guestTime.Seconds(), time.Since(t0).Seconds(), tKernel.Sub(t0).Seconds())
	switch {
	case res.verdict == "PASS":
		logf("PASS")
		return nil
	case res.verdict == "":
		return fmt.Errorf("qemu exited without a result line: the guest kernel panicked or /init failed (see console above)")
	default:
		return fmt.Errorf("guest tests failed (%s): %s", res.verdict, strings.Join(res.failed, ", "))
	}
}

// buildKernel runs internal/vmtest/build-kernel, which prints the bzImage path (and
// builds it only on a cache miss).
func buildKernel(ctx context.Context, root string) (string, error) {
	script := filepath.Join(root, "internal", "vmtest", "build-kernel")
	cmd := exec.CommandContext(ctx, script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}
