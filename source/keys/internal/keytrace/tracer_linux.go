//go:build linux

package keytrace

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/bpfring"
)

// Config configures Open. The zero value is the default.
type Config struct {
	// RingSize is the ring buffer size in bytes, a power of two multiple of
	// the page size; 0 means DefaultRingSize.
	RingSize int
}

// Tracer receives the key operations of every process.
type Tracer struct {
	r     *bpfring.Reader
	calls *ebpf.Map // the in-flight table
}

// ProbeLayout finds the offsets the programs read in the running kernel's
// BTF.
func ProbeLayout() (Layout, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return Layout{}, fmt.Errorf("keytrace: kernel BTF: %w (%w)", err, ebpf.ErrNotSupported)
	}
	var l Layout
	for _, f := range []struct {
		dst    *int32
		strct  string
		member []string
	}{
		{&l.TaskCred, "task_struct", []string{"cred"}},
		{&l.CredThread, "cred", []string{"thread_keyring"}},
		{&l.CredProcess, "cred", []string{"process_keyring"}},
		{&l.CredSession, "cred", []string{"session_keyring"}},
		{&l.CredReqAuth, "cred", []string{"request_key_auth"}},
		{&l.CredUser, "cred", []string{"user"}},
		{&l.CredUserNS, "cred", []string{"user_ns"}},
		{&l.UserUID, "user_struct", []string{"uid"}},
		{&l.KeySerial, "key", []string{"serial"}},
		{&l.KeyPayload, "key", []string{"payload"}}, // union key_payload: data[0] at 0
		{&l.RKADest, "request_key_auth", []string{"dest_keyring"}},
	} {
		var st *btf.Struct
		if err := spec.TypeByName(f.strct, &st); err != nil {
			return Layout{}, fmt.Errorf("keytrace: kernel BTF has no struct %s (CONFIG_KEYS off?): %w (%w)", f.strct, err, ebpf.ErrNotSupported)
		}
		off, ok := memberOffset(st.Members, f.member[0])
		if !ok {
			return Layout{}, fmt.Errorf("keytrace: kernel BTF: struct %s has no %s (%w)", f.strct, f.member[0], ebpf.ErrNotSupported)
		}
		*f.dst = int32(off)
	}
	return l, nil
}

// memberOffset finds member name among ms, looking into anonymous structs
// and unions, and returns its byte offset.
func memberOffset(ms []btf.Member, name string) (uint32, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m.Offset.Bytes(), true
		}
		if m.Name != "" {
			continue
		}
		var inner []btf.Member
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			inner = t.Members
		case *btf.Union:
			inner = t.Members
		}
		if off, ok := memberOffset(inner, name); ok {
			return m.Offset.Bytes() + off, true
		}
	}
	return 0, false
}

// closers closes links in order.
type closers []io.Closer

func (c closers) Close() error {
	for _, l := range c {
		l.Close()
	}
	return nil
}

// Open loads the programs and attaches them: the sys_exit tracepoints
// first, then the sys_enter ones, so no call is remembered without a
// program to report it. It needs root (CAP_BPF, CAP_PERFMON and
// CAP_SYS_ADMIN for tracefs), the syscall tracepoints
// (CONFIG_FTRACE_SYSCALLS), BTF, BPF ring buffers (5.8) and
// bpf_probe_read_kernel (refused under lockdown=confidentiality); where the
// kernel cannot, the error wraps ebpf.ErrNotSupported.
func Open(cfg Config) (*Tracer, error) {
	ring := cfg.RingSize
	if ring == 0 {
		ring = DefaultRingSize
	}
	if _, err := os.Stat(filepath.Join(tracefsDir(), "events/syscalls/sys_enter_keyctl")); err != nil {
		return nil, fmt.Errorf("keytrace: no syscalls:sys_enter_keyctl tracepoint (CONFIG_FTRACE_SYSCALLS off, or tracefs not mounted): %w (%w)", err, ebpf.ErrNotSupported)
	}
	l, err := ProbeLayout()
	if err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("keytrace: %w", err)
	}
	coll, err := ebpf.NewCollection(collectionSpec(l, ring))
	if err != nil {
		return nil, fmt.Errorf("keytrace: load: %w (%w)", err, ebpf.ErrNotSupported)
	}
	var ls closers
	fail := func(err error) (*Tracer, error) {
		ls.Close()
		coll.Close()
		return nil, fmt.Errorf("keytrace: %w (%w)", err, ebpf.ErrNotSupported)
	}
	for _, tp := range []string{"sys_exit_keyctl", "sys_exit_add_key", "sys_exit_request_key"} {
		lk, err := link.Tracepoint("syscalls", tp, coll.Programs[progExit], nil)
		if err != nil {
			return fail(fmt.Errorf("attach syscalls:%s: %w", tp, err))
		}
		ls = append(ls, lk)
	}
	for _, p := range []struct{ prog, tp string }{
		{progEnterKeyctl, "sys_enter_keyctl"}, {progEnterAddKey, "sys_enter_add_key"}, {progEnterRequest, "sys_enter_request_key"},
	} {
		lk, err := link.Tracepoint("syscalls", p.tp, coll.Programs[p.prog], nil)
		if err != nil {
			return fail(fmt.Errorf("attach syscalls:%s: %w", p.tp, err))
		}
		ls = append(ls, lk)
	}
	// Detach in the reverse order: entries first.
	for i, j := 0, len(ls)-1; i < j; i, j = i+1, j-1 {
		ls[i], ls[j] = ls[j], ls[i]
	}
	calls := coll.Maps[inflightMap]
	r, err := bpfring.NewReader("keytrace", coll, ls, eventsMap, dropsMap)
	if err != nil {
		return nil, err
	}
	return &Tracer{r: r, calls: calls}, nil
}

// tracefsDir is where tracefs is mounted.
func tracefsDir() string {
	for _, d := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(filepath.Join(d, "events")); err == nil {
			return d
		}
	}
	return "/sys/kernel/tracing"
}

// SetDeadline makes a blocked Read return an error wrapping
// os.ErrDeadlineExceeded at d; the zero time waits forever.
func (t *Tracer) SetDeadline(d time.Time) { t.r.SetDeadline(d) }

// Read waits for the next event. After Close it returns an error matching
// watchq.ErrClosed (and os.ErrClosed). One
// goroutine may call Read at a time.
func (t *Tracer) Read(e *Event) error {
	s, err := t.r.Read()
	if err != nil {
		return closedErr(err)
	}
	return Decode(s, e)
}

// Marker makes the tracer report a KindMarker event with cookie, from this
// process, after every event of a call that returned before Marker was
// called.
func (t *Tracer) Marker(cookie uint64) error {
	_, _, errno := unix.Syscall6(unix.SYS_KEYCTL, MarkerOption, uintptr(cookie), 0, 0, 0, 0)
	if errno != unix.EOPNOTSUPP {
		return fmt.Errorf("keytrace: marker keyctl(%#x) returned %v, want EOPNOTSUPP", MarkerOption, errno)
	}
	return nil
}

// Dropped returns how many events were lost so far (a full ring buffer, a
// full in-flight table): the count events carry in Drops.
func (t *Tracer) Dropped() (uint64, error) { return t.r.Dropped() }

// Busy reports whether some thread is inside a traced call now: its change
// may be made but not yet reported.
func (t *Tracer) Busy() bool {
	var k uint64
	err := t.calls.NextKey(nil, &k)
	return !errors.Is(err, ebpf.ErrKeyNotExist)
}

// Close detaches the programs and releases everything; a blocked Read
// returns watchq.ErrClosed. Later calls do nothing and return nil.
func (t *Tracer) Close() error { return t.r.Close() }

// closedErr turns the ring buffer's "closed" (os.ErrClosed) into
// watchq.ErrClosed, which matches os.ErrClosed too.
func closedErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("keytrace: read: %w", watchq.ErrClosed)
	}
	return err
}
