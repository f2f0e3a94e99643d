//go:build linux

package device_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/devtest"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/internal/vmtest/guest"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device"
	"github.com/watchq/watchq/source/device/blockerr"
	"github.com/watchq/watchq/source/device/uevent"
	"github.com/watchq/watchq/source/device/usbreset"
	"golang.org/x/sys/unix"
)

func open(t testing.TB, cfg device.Config) *device.Source {
	t.Helper()
	testenv.RequireRoot(t)
	if cfg.Engine == nil {
		cfg.Engine = watchq.NewEngine(watchq.Config{})
	}
	s, err := device.Open(context.Background(), cfg)
	testenv.SkipIfUnsupported(t, "device source", err)
	t.Cleanup(func() { s.Close() })
	return s
}

func watch(t testing.TB, s *device.Source, tag record.Tag) *watchq.Queue {
	t.Helper()
	q := watchq.NewQueue()
	if _, err := q.SetSize(256); err != nil {
		t.Fatal(err)
	}
	if err := s.Watch(q, tag, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// next returns the next record for which keep is true, skipping others
// (the machine's own devices, other tests' loop devices), within 15 s.
func next(t *testing.T, q *watchq.Queue, keep func(record.Record) bool) record.Record {
	t.Helper()
	return nextWithin(t, q, 15*time.Second, keep)
}

// nextWithin is next with a timeout.
func nextWithin(t *testing.T, q *watchq.Queue, timeout time.Duration, keep func(record.Record) bool) record.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		r, err := q.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for a record: %v", err)
		}
		if keep(r) {
			return r
		}
	}
}

func blockNamed(prefix string) func(record.Record) bool {
	return func(r record.Record) bool {
		if r.Type() != record.TypeBlock || record.IsBlockError(r.Subtype()) {
			return false
		}
		b, err := r.Block()
		return err == nil && (b.Name == prefix || strings.HasPrefix(b.Name, prefix+"p"))
	}
}

// TestLoopLifecycle creates a loop device (add), attaches a disk image
// with a partition table and partition scanning (change with the size, and
// add for the partition where the kernel reads MBR tables), detaches it
// (change with size 0, partition remove) and deletes it (remove).
func TestLoopLifecycle(t *testing.T) {
	s := open(t, device.Config{NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 7)
	const size = 4 << 20
	loop := devtest.CreateLoop(t)
	part := loop.Name + "p1"
	expect := func(step string, want map[string]uint64) {
		t.Helper()
		for len(want) > 0 {
			b, _ := next(t, q, blockNamed(loop.Name)).Block()
			key := record.BlockSubtypeName(b.Subtype) + " " + b.Name
			t.Logf("%s: %s sector=%d dev=%#x flags=%#x tag=%d", step, key, b.Sector, b.Dev, b.TypeInfo, b.Tag)
			sector, ok := want[key]
			if !ok {
				continue
			}
			delete(want, key)
			isPart := uint32(b.TypeInfo)<<record.InfoTypeInfoShift == record.BlockFlagPartition
			if b.Tag != 7 || b.Sector != sector || isPart != (b.Name == part) || b.Name == loop.Name && b.Dev != loop.Dev {
				t.Errorf("%s: %s: %+v, want tag 7, sector %d, dev %#x", step, key, b, sector, loop.Dev)
			}
		}
	}
	expect("create", map[string]uint64{"add " + loop.Name: 0})
	loop.Attach(t, devtest.DiskImage(t, size), unix.LO_FLAGS_PARTSCAN)
	want := map[string]uint64{"change " + loop.Name: size / 512}
	// The partition scan ran inside LOOP_CONFIGURE, so sysfs says now
	// whether this kernel understood the MBR table.
	_, err := os.Stat("/sys/block/" + loop.Name + "/" + part)
	partitions := err == nil
	if partitions {
		want["add "+part] = size/512 - 2048
	} else {
		t.Logf("no %s: this kernel reads no MBR partition tables (CONFIG_MSDOS_PARTITION off); partition records are covered by the unit tests and the vmtest guest", part)
	}
	expect("attach", want)
	loop.Detach(t)
	want = map[string]uint64{"change " + loop.Name: 0}
	if partitions {
		want["remove "+part] = 0
	}
	expect("detach", want)
	loop.Remove(t)
	expect("delete", map[string]uint64{"remove " + loop.Name: 0})
}

// TestBlockErrorRecord: an O_DIRECT read of the bad range of a FUSE-backed
// loop device yields exactly one block error record, IO, with the loop's
// dev and the read's sector; good reads before each bad one yield none.
func TestBlockErrorRecord(t *testing.T) {
	s := open(t, device.Config{NoUSBReset: true})
	testenv.SkipIfUnsupported(t, "block error tracer", s.Capabilities().BlockErrors)
	q := watch(t, s, 3)
	const bad = 4 << 20
	file := devtest.BadFile(t, 8<<20, bad, 64<<10)
	loop := devtest.AttachLoop(t, file, unix.LO_FLAGS_READ_ONLY)
	isErr := func(r record.Record) bool {
		b, err := r.Block()
		return err == nil && record.IsBlockError(b.Subtype) && b.Dev == loop.Dev
	}
	for i, off := range []int64{bad, bad + 4096} {
		if err := devtest.DirectRead(loop.Path, int64(i+1)*8192); err != nil {
			t.Fatalf("good read: %v", err)
		}
		if err := devtest.DirectRead(loop.Path, off); !errors.Is(err, syscall.EIO) {
			t.Fatalf("bad read = %v, want EIO", err)
		}
		b, _ := next(t, q, isErr).Block()
		if b.Subtype != record.BlockErrorIO || b.Sector != uint64(off/512) || b.Tag != 3 || b.Name != "" {
			t.Fatalf("record %+v, want IO at sector %d tag 3", b, off/512)
		}
	}
	if st := s.Stats(); st.BlockErrors < 2 || st.BPFDrops != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestSpoofedAndSynthetic runs the source in a private network namespace:
// a fake USB add sent by this process to the kernel group is dropped and
// counted, and a synthetic kernel uevent sent right after it is received
// and posted. The fake datagram is queued first, so the first record seen
// being the kernel's proves the fake one was dropped, not just late.
func TestSpoofedAndSynthetic(t *testing.T) {
	ns := devtest.NewNetNS(t)
	s := open(t, device.Config{NetNS: ns, NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 1)
	hold := make(chan struct{})
	restore := device.SetTestHookReceive(func() { <-hold })
	sender, err := uevent.Dial(uevent.Config{NetNS: ns, ReadBuffer: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	park(t, hold) // the listener is now parked before its next receive
	fake := "add@/devices/pci0000:00/usb9/9-9\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/usb9/9-9\x00SUBSYSTEM=usb\x00DEVTYPE=usb_device\x00"
	if err := sender.Send(context.Background(), []byte(fake)); err != nil {
		t.Fatal(err)
	}
	uuid := devtest.UUID()
	if err := devtest.Synth("/sys/block/loop0/uevent", "change", uuid); err != nil {
		t.Fatal(err)
	}
	restore()
	close(hold)
	// The fake was queued before the synthetic uevent, so once a loop0
	// change is posted with Spoofed counted, both have been handled.
	// Earlier loop0 records (from park, or other tests' loop devices) may
	// come first; none of what arrives may be the fake USB device.
	var seen []record.Record
	for {
		r := next(t, q, func(r record.Record) bool { return r.Type() == record.TypeUSB || blockNamed("loop0")(r) })
		seen = append(seen, r)
		if r.Type() == record.TypeUSB {
			t.Fatalf("spoofed datagram was posted: %v", r)
		}
		if b, _ := r.Block(); b.Subtype != record.BlockChange || b.Tag != 1 {
			t.Fatalf("record %+v, want change on loop0", b)
		}
		if s.Stats().Spoofed > 0 {
			break
		}
	}
	if st := s.Stats(); st.Spoofed != 1 {
		t.Fatalf("Spoofed = %d, want 1", st.Spoofed)
	}
	t.Logf("%d loop0 change records, spoofed datagram dropped and counted", len(seen))
}

// park waits until the uevent goroutine runs the receive hook (which
// blocks on hold). The hook runs only between receives, so park makes
// uevents (changes on loop0) until the goroutine takes the hand-off: on a
// quiet machine, such as the vmtest guest, nothing else would wake it.
// Having taken it, the goroutine receives once more and blocks in the hook
// again. park returns how many uevents it made.
func park(t *testing.T, hold chan struct{}) int {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	made := 0
	for {
		select {
		case hold <- struct{}{}:
			return made
		case <-tick.C:
			if err := devtest.Synth("/sys/block/loop0/uevent", "change", devtest.UUID()); err != nil {
				t.Fatal(err)
			}
			made++
		case <-deadline:
			t.Fatal("the uevent goroutine never reached the receive hook")
		}
	}
}

// storm writes synthetic changes number from to to-1 on loop0.
func storm(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := devtest.Synth("/sys/block/loop0/uevent", "change", devtest.UUID(), fmt.Sprintf("N=%d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// accounted waits until every uevent made since the source opened (sent:
// the storm and park's) is received or counted lost. In the vmtest guest,
// where nothing else makes uevents, the sum must be exactly sent; a busy
// machine's own uevents may add to it.
func accounted(t *testing.T, s *device.Source, sent int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st := s.Stats()
	for ; st.Received+st.UeventsLost < uint64(sent); st = s.Stats() {
		if ctx.Err() != nil {
			t.Fatalf("storm not accounted for (%d uevents sent): %+v", sent, st)
		}
		time.Sleep(time.Millisecond)
	}
	if guest.InVM() && st.Received+st.UeventsLost != uint64(sent) {
		t.Errorf("received %d + lost %d != %d uevents sent: %+v", st.Received, st.UeventsLost, sent, st)
	}
}

// TestOverrunLoss holds the listener while a storm overruns a deliberately
// small receive buffer, then checks that the watcher gets an in-band loss
// record and that records flow again afterwards.
func TestOverrunLoss(t *testing.T) {
	s := open(t, device.Config{ReadBuffer: 4096, NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 2)
	hold := make(chan struct{})
	restore := device.SetTestHookReceive(func() { <-hold })
	parked := park(t, hold)
	const n = 300
	storm(t, 0, n)
	restore()
	close(hold)
	r := next(t, q, func(r record.Record) bool { return r.IsLoss() })
	l, _ := r.Loss()
	t.Logf("loss record: %d lost", l.Count)
	if l.Count == 0 {
		t.Errorf("loss count 0")
	}
	// The listener drains what the socket kept; then new uevents flow.
	accounted(t, s, parked+n)
	flowing(t, q)
	if st := s.Stats(); st.Overruns == 0 || st.UeventsLost == 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestOverrunLossMidStorm lets the listener read the overrun while the
// storm is still going, as a slow guest does: the socket stays congested
// until its queue drains, so the rest of the storm is dropped after the
// first loss record. Those drops must be reported too, on a quiet machine
// (no later uevent to prompt it) and within the same 15 s.
func TestOverrunLossMidStorm(t *testing.T) {
	s := open(t, device.Config{ReadBuffer: 4096, NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 2)
	hold := make(chan struct{})
	restore := device.SetTestHookReceive(func() { <-hold })
	parked := park(t, hold)
	const first, n = 50, 300
	storm(t, 0, first)
	hold <- struct{}{} // one more receive: the overrun
	r := next(t, q, func(r record.Record) bool { return r.IsLoss() })
	l, _ := r.Loss()
	t.Logf("first loss record: %d lost", l.Count)
	storm(t, first, n)
	restore()
	close(hold)
	accounted(t, s, parked+n)
	st := s.Stats()
	t.Logf("%d received, %d lost in %d reports", st.Received, st.UeventsLost, st.Overruns)
	if st.Overruns < 2 {
		t.Errorf("Overruns = %d, want a report after the first one", st.Overruns)
	}
	flowing(t, q)
}

// flowing proves that records flow again after an overrun: it makes a
// change on loop1 every 100 ms until a loop1 record arrives (within 15 s).
// One is not enough on a busy machine: other tests' storms (every listener
// gets every kernel uevent) may overrun the 4 KiB buffer again and drop it.
func flowing(t *testing.T, q *watchq.Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	loop1 := blockNamed("loop1")
	for {
		if err := devtest.Synth("/sys/block/loop1/uevent", "change", devtest.UUID()); err != nil {
			t.Fatal(err)
		}
		tick, cancelTick := context.WithTimeout(ctx, 100*time.Millisecond)
		for {
			r, err := q.Next(tick)
			if err != nil {
				break
			}
			if loop1(r) {
				cancelTick()
				return
			}
		}
		cancelTick()
		if ctx.Err() != nil {
			t.Fatal("no loop1 record after the overrun")
		}
	}
}

type denyPolicy struct{ watchq.AllowAll }

func (denyPolicy) WatchAllowed(w *watchq.Cred, obj watchq.Object) error {
	if obj.Kind == watchq.KindDevices {
		return &watchq.PermissionError{Op: "watch", Reason: "devices denied by test policy"}
	}
	return nil
}

func TestWatch(t *testing.T) {
	s := open(t, device.Config{NoBlockErrors: true, NoUSBReset: true})
	q := watchq.NewQueue()
	if _, err := q.SetSize(32); err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := s.Unwatch(q); !errors.Is(err, syscall.EBADSLT) {
		t.Errorf("removing an absent watch = %v, want EBADSLT", err)
	}
	if err := s.Watch(q, 0x42, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Watch(q, 0x43, nil); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second watch = %v, want EBUSY", err)
	}
	if err := s.Unwatch(q); err != nil {
		t.Fatal(err)
	}
	r, err := q.TryRead(make([]byte, 128))
	_ = r
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Unwatch(q); !errors.Is(err, syscall.EBADSLT) {
		t.Errorf("second removal = %v, want EBADSLT", err)
	}
}

func TestWatchRemovalRecord(t *testing.T) {
	s := open(t, device.Config{NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 0x42)
	if err := s.Unwatch(q); err != nil {
		t.Fatal(err)
	}
	r := next(t, q, func(r record.Record) bool { return r.IsRemoval() })
	m, err := r.Removal()
	if err != nil || len(r) != record.RemovalSizeNoID || m.ID != 0 || m.Tag != 0x42 {
		t.Fatalf("removal %v (%d bytes) %+v %v, want 8 bytes, id 0, tag 0x42", r, len(r), m, err)
	}
}

func TestWatchPolicy(t *testing.T) {
	s := open(t, device.Config{Engine: watchq.NewEngine(watchq.Config{Policy: denyPolicy{}}), NoBlockErrors: true, NoUSBReset: true})
	q := watchq.NewQueue()
	defer q.Close()
	if err := s.Watch(q, 1, watchq.CurrentCred()); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("Watch under a denying policy = %v, want EACCES", err)
	}
}

func TestCloseRemovesWatches(t *testing.T) {
	s := open(t, device.Config{NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 9)
	s.Close()
	r := next(t, q, func(r record.Record) bool { return r.IsRemoval() })
	if r.Tag() != 9 {
		t.Fatalf("removal tag %d", r.Tag())
	}
}

func TestCapabilities(t *testing.T) {
	s := open(t, device.Config{})
	c := s.Capabilities()
	t.Logf("block errors: %v (%s); USB reset: %v", c.BlockErrors, c.BlockTracepoint, c.USBReset)
	if c.Uevents != nil {
		t.Errorf("uevents: %v", c.Uevents)
	}
	if c.BlockErrors == nil && c.BlockTracepoint == "" {
		t.Error("block errors run but no tracepoint named")
	}
}

// TestTransientTracerFailure: a tracer that fails for a passing reason
// (EMFILE) fails Open instead of leaving the source without it for its
// life; one the kernel cannot run is left out and Capabilities says why.
func TestTransientTracerFailure(t *testing.T) {
	testenv.RequireRoot(t)
	emfile := func(what string) error { return fmt.Errorf("%s: %w", what, unix.EMFILE) }
	unsupported := fmt.Errorf("no BTF (%w)", ebpf.ErrNotSupported)
	noUSB := func() (*usbreset.Tracer, error) { return nil, unsupported }
	for _, tc := range []struct {
		name string
		blk  func(blockerr.Config) (*blockerr.Tracer, error)
		usb  func() (*usbreset.Tracer, error)
	}{
		{"block", func(blockerr.Config) (*blockerr.Tracer, error) { return nil, emfile("blockerr: load program") }, noUSB},
		{"usb", func(blockerr.Config) (*blockerr.Tracer, error) { return nil, unsupported }, func() (*usbreset.Tracer, error) { return nil, emfile("usbreset: load") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer device.SetTracerOpeners(tc.blk, tc.usb)()
			s, err := device.Open(context.Background(), device.Config{Engine: watchq.NewEngine(watchq.Config{})})
			if err == nil {
				c := s.Capabilities()
				s.Close()
				t.Fatalf("Open with a tracer failing on EMFILE succeeded (block errors: %v; USB reset: %v)", c.BlockErrors, c.USBReset)
			}
			if !errors.Is(err, unix.EMFILE) {
				t.Errorf("Open: %v, want EMFILE", err)
			}
		})
	}
	defer device.SetTracerOpeners(func(blockerr.Config) (*blockerr.Tracer, error) { return nil, unsupported }, noUSB)()
	s := open(t, device.Config{})
	if c := s.Capabilities(); !errors.Is(c.BlockErrors, ebpf.ErrNotSupported) || !errors.Is(c.USBReset, ebpf.ErrNotSupported) {
		t.Errorf("unsupported tracers: capabilities %+v", c)
	}
}

// TestCloseAndContext: a second Close returns nil; a closed source refuses
// watches with watchq.ErrClosed; a done ctx fails Open; cancelling Open's
// ctx closes the source, every watch ending with its removal record.
func TestCloseAndContext(t *testing.T) {
	testenv.RequireRoot(t)
	eng := watchq.NewEngine(watchq.Config{})
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if s, err := device.Open(done, device.Config{Engine: eng, NoBlockErrors: true, NoUSBReset: true}); !errors.Is(err, context.Canceled) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open with a cancelled ctx = %v, want context.Canceled", err)
	}

	s := open(t, device.Config{NoBlockErrors: true, NoUSBReset: true})
	q := watch(t, s, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	closed := func(err error) bool { return errors.Is(err, watchq.ErrClosed) && errors.Is(err, os.ErrClosed) }
	if err := s.Watch(watchq.NewQueue(), 1, nil); !closed(err) {
		t.Errorf("Watch after Close = %v, want watchq.ErrClosed", err)
	}
	if err := s.Unwatch(q); !closed(err) {
		t.Errorf("Unwatch after Close = %v, want watchq.ErrClosed", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := device.Open(ctx, device.Config{Engine: eng, NoBlockErrors: true, NoUSBReset: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q = watch(t, s, 4)
	cancel()
	if r := next(t, q, func(r record.Record) bool { return r.IsRemoval() }); r.Tag() != 4 {
		t.Fatalf("removal tag %d, want 4", r.Tag())
	}
	if err := s.Watch(watchq.NewQueue(), 1, nil); !closed(err) {
		t.Errorf("Watch after ctx was cancelled = %v, want watchq.ErrClosed", err)
	}
}
