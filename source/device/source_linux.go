//go:build linux

package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/internal/bpfring"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device/blockerr"
	"github.com/watchq/watchq/source/device/uevent"
	"github.com/watchq/watchq/source/device/usbreset"
	"golang.org/x/sys/unix"
)

type counters struct {
	received, posted, ignored, malformed, spoofed, truncated, overruns,
	ueventsLost, readErrors, blockErrors, bpfDrops, usbResets atomic.Uint64
}

// Source is the device notification source: one global watch list fed by
// a uevent listener, a block error tracer and, where possible, a USB reset
// tracer, each running in its own goroutine.
type Source struct {
	wl    *watchq.WatchList
	conn  *uevent.Conn
	blk   *blockerr.Tracer
	usb   *usbreset.Tracer
	caps  Capabilities
	sysfs string

	c         counters
	closing   atomic.Bool
	stop      func() bool
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Open starts the source. The uevent listener is required; the block error
// and USB reset tracers are optional, and Capabilities says whether they
// run: a tracer the kernel cannot run is left out, but one that failed for
// a transient reason (EMFILE, ENOMEM) fails Open.
//
// ctx governs the source's life, as for keys.Open: cancelling it closes
// the source as Close does (every watch ends with a removal record), and
// a ctx already done fails Open with ctx.Err(). Open itself does not
// block.
func Open(ctx context.Context, cfg Config) (*Source, error) {
	if cfg.Engine == nil {
		return nil, errors.New("device: Config.Engine is nil")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("device: open: %w", err)
	}
	conn, err := uevent.Dial(uevent.Config{ReadBuffer: cfg.ReadBuffer, NetNS: cfg.NetNS})
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	s := &Source{conn: conn, sysfs: cfg.SysfsRoot}
	if s.sysfs == "" {
		s.sysfs = "/sys"
	}
	// A tracer the kernel cannot run leaves the source without it, as
	// Capabilities says; one that failed for a passing reason (EMFILE,
	// ENOMEM: bpfring.Transient) fails Open, which the caller may try
	// again, rather than run without it for the source's life.
	s.caps.BlockErrors = errors.New("disabled by Config.NoBlockErrors")
	if !cfg.NoBlockErrors {
		if s.blk, s.caps.BlockErrors = openBlockErr(blockerr.Config{RingSize: cfg.RingSize}); s.blk != nil {
			s.caps.BlockTracepoint = s.blk.Tracepoint
		} else if bpfring.Transient(s.caps.BlockErrors) {
			conn.Close()
			return nil, fmt.Errorf("device: block error tracer: %w", s.caps.BlockErrors)
		}
	}
	s.caps.USBReset = errors.New("disabled by Config.NoUSBReset")
	if !cfg.NoUSBReset {
		if s.usb, s.caps.USBReset = openUSBReset(); s.usb == nil && bpfring.Transient(s.caps.USBReset) {
			if s.blk != nil {
				s.blk.Close()
			}
			conn.Close()
			return nil, fmt.Errorf("device: USB reset tracer: %w", s.caps.USBReset)
		}
	}
	s.wl = cfg.Engine.NewWatchList(Object)
	s.wg.Add(1)
	go s.listen()
	if s.blk != nil {
		s.wg.Add(1)
		go s.traceBlock()
	}
	if s.usb != nil {
		s.wg.Add(1)
		go s.traceUSB()
	}
	s.stop = context.AfterFunc(ctx, func() { s.close(false) })
	return s, nil
}

// The tracers' constructors; tests replace them.
var (
	openBlockErr = blockerr.Open
	openUSBReset = usbreset.Open
)

// Capabilities reports which parts of the source run here, and why not.
func (s *Source) Capabilities() Capabilities { return s.caps }

// Watch is watch_devices(2) of the ver #2 patch set (drivers/base/watch.c)
// with a tag: it adds a watch on the global device list for q, delivering
// records stamped with tag. A second watch for q is EBUSY; the engine's
// policy (security_watch_devices) may refuse with EACCES. watcher nil means
// the calling process. After Close it fails with watchq.ErrClosed.
func (s *Source) Watch(q *watchq.Queue, tag record.Tag, watcher *watchq.Cred) error {
	if watcher == nil {
		watcher = watchq.CurrentCred()
	}
	if s.closing.Load() {
		return fmt.Errorf("device: watch: %w", watchq.ErrClosed)
	}
	err := s.wl.Add(q, DevicesID, tag, watcher)
	if errors.Is(err, watchq.ErrListDead) {
		// Only Close destroys the device list.
		return fmt.Errorf("device: watch: %w", watchq.ErrClosed)
	}
	return err
}

// Unwatch is watch_devices(2) with tag -1: it removes q's watch and posts
// an 8-byte removal record (id 0) to q. No watch is EBADSLT; after Close
// it fails with watchq.ErrClosed.
func (s *Source) Unwatch(q *watchq.Queue) error {
	if s.closing.Load() {
		return fmt.Errorf("device: unwatch: %w", watchq.ErrClosed)
	}
	return s.wl.Remove(q, DevicesID)
}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	c := &s.c
	return Stats{
		Received: c.received.Load(), Posted: c.posted.Load(), Ignored: c.ignored.Load(),
		Malformed: c.malformed.Load(), Spoofed: c.spoofed.Load(), Truncated: c.truncated.Load(),
		Overruns: c.overruns.Load(), UeventsLost: c.ueventsLost.Load(), ReadErrors: c.readErrors.Load(),
		BlockErrors: c.blockErrors.Load(), BPFDrops: c.bpfDrops.Load(), USBResets: c.usbResets.Load(),
	}
}

// Close stops the source: the goroutines end, the socket and the BPF
// programs are released, and every watch is removed with a removal record
// (remove_watch_list). Later calls wait for the first to finish and
// return nil.
func (s *Source) Close() error { return s.close(true) }

// close is Close; stopCtx says whether to stop Open's context.AfterFunc
// (not when that is the caller: it runs in a goroutine of its own, which
// must not read s.stop while Open may still be writing it).
func (s *Source) close(stopCtx bool) error {
	var err error
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		if stopCtx {
			s.stop()
		}
		err = s.conn.Close()
		if s.blk != nil {
			s.blk.Close()
		}
		if s.usb != nil {
			s.usb.Close()
		}
		s.wg.Wait()
		s.wl.Destroy()
	})
	return err
}

// testHookReceive, if set (by tests only), runs before each uevent receive.
var testHookReceive atomic.Pointer[func()]

func (s *Source) post(rec []byte) {
	s.wl.Post(rec, watchq.SystemCred, 0)
	s.c.posted.Add(1)
}

// listen is the uevent goroutine. ENOBUFS becomes in-band loss; no error
// ends it except Close, and repeated unexpected errors back off rather
// than spin.
func (s *Source) listen() {
	defer s.wg.Done()
	buf := make([]byte, uevent.MaxSize)
	var (
		ev      uevent.Event
		rec     [record.MaxRecordSize]byte
		backoff time.Duration
	)
	size := s.blockSize
	for {
		if h := testHookReceive.Load(); h != nil {
			(*h)()
		}
		n, err := s.conn.Receive(context.Background(), buf)
		if err != nil {
			if s.closing.Load() {
				return
			}
			var oe *uevent.OverrunError
			switch {
			case errors.As(err, &oe):
				s.c.overruns.Add(1)
				s.c.ueventsLost.Add(oe.Lost)
				s.wl.PostLoss(oe.Lost)
			case errors.Is(err, uevent.ErrSpoofed):
				s.c.spoofed.Add(1)
			case errors.Is(err, uevent.ErrTruncated):
				// A kernel datagram we could not read whole: a lost event.
				s.c.truncated.Add(1)
				s.wl.PostLoss(1)
			default:
				s.c.readErrors.Add(1)
				backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
				time.Sleep(backoff)
			}
			continue
		}
		backoff = 0
		s.c.received.Add(1)
		if err := uevent.Parse(&ev, buf[:n]); err != nil {
			s.c.malformed.Add(1)
			continue
		}
		r, ok := MapUevent(&ev, rec[:0], size)
		if !ok {
			s.c.ignored.Add(1)
			continue
		}
		s.post(r)
	}
}

// blockSize reads /sys<devpath>/size without allocating a path string
// beyond a stack buffer.
func (s *Source) blockSize(devpath []byte) uint64 {
	var pb [512]byte
	p := append(append(append(pb[:0], s.sysfs...), devpath...), "/size\x00"...)
	if len(p) > len(pb) {
		return 0
	}
	fd, err := unix.Open(unsafeString(p[:len(p)-1]), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	var b [32]byte
	n, err := unix.Read(fd, b[:])
	if err != nil || n <= 0 {
		return 0
	}
	var v uint64
	for _, c := range b[:n] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + uint64(c-'0')
	}
	return v
}

// traceBlock is the block error goroutine: tracepoint → record, ring
// buffer drops → in-band loss.
func (s *Source) traceBlock() {
	defer s.wg.Done()
	var (
		e   blockerr.Event
		rec [record.MaxRecordSize]byte
	)
	for {
		// Wake at least once a second to report drops even when the ring
		// stays empty afterwards.
		s.blk.SetDeadline(time.Now().Add(time.Second))
		err := s.blk.Read(&e)
		if s.closing.Load() {
			return
		}
		s.postDrops(s.blk.Drops)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				s.c.readErrors.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		s.c.blockErrors.Add(1)
		st, _ := blockerr.Subtype(e.Errno)
		r, _ := record.BlockNotification{Subtype: st, Dev: uint64(e.Dev), Sector: e.Sector}.AppendBinary(rec[:0])
		s.post(r)
	}
}

// postDrops posts one loss record for the records a tracer's program
// dropped on its full ring buffer since drops was last called.
func (s *Source) postDrops(drops func() (uint64, error)) {
	if d, err := drops(); err == nil && d > 0 {
		s.c.bpfDrops.Add(d)
		s.wl.PostLoss(d)
	}
}

// traceUSB is the USB reset goroutine.
func (s *Source) traceUSB() {
	defer s.wg.Done()
	var rec [record.MaxRecordSize]byte
	for {
		name, err := s.usb.Read()
		if s.closing.Load() {
			return
		}
		s.postDrops(s.usb.Drops)
		if err != nil {
			s.c.readErrors.Add(1)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.c.usbResets.Add(1)
		r, _ := record.USBNotification{Subtype: record.USBDeviceReset, Name: name}.AppendBinary(rec[:0])
		s.post(r)
	}
}
