//go:build linux

package daemon_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/daemon/protocol"
	"github.com/watchq/watchq/internal/shmring"
	"github.com/watchq/watchq/internal/testenv"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// seqChecker follows a stream of block records carrying sequence numbers
// in their sector field, with the loss records among them: every gap must
// be announced by a loss record, in the gap's place, counting exactly the
// records missing (the engine's semantics: fs/pipe.c pipe_read's note_loss
// after the record it follows).
type seqChecker struct {
	next     uint64 // the sequence number expected
	lossSeen uint64 // lost, according to the loss record just seen
	records  int
	lost     uint64
}

func (s *seqChecker) check(tb testing.TB, r record.Record) {
	tb.Helper()
	if r.IsLoss() {
		l, _ := r.Loss()
		if s.lossSeen != 0 {
			tb.Fatalf("two loss records in a row")
		}
		s.lossSeen = uint64(l.Count)
		return
	}
	b, err := r.Block()
	if err != nil {
		tb.Fatalf("record %v: %v", r, err)
	}
	if b.Sector != s.next+s.lossSeen {
		tb.Fatalf("record %d after a loss of %d; want %d", b.Sector, s.lossSeen, s.next+s.lossSeen)
	}
	s.lost += s.lossSeen
	s.lossSeen = 0
	s.next = b.Sector + 1
	s.records++
}

// TestRingRoundTrip: records posted to a ring queue arrive whole and in
// order through Read, Next and Records, the ring wrapping many times; when
// the daemon closes the queue (its client's connection ends), the reader
// drains what is left and then reads watchq.ErrClosed.
func TestRingRoundTrip(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, q := deviceQueue(t, ctx, ip, ringQueue(64, 1), 3)
	defer q.Close()
	if q.File() != nil {
		t.Error("ring queue has a pipe")
	}
	var sc seqChecker
	buf := make([]byte, 100) // four records at most: Read packs, as read(2) does
	const total = 3000
	for posted := 0; posted < total; {
		for range 40 {
			ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, uint64(posted)))
			posted++
		}
		for sc.records < posted {
			switch sc.records % 3 {
			case 0:
				n, err := q.Read(ctx, buf)
				if err != nil {
					t.Fatal(err)
				}
				for r, err := range record.Records(buf[:n]) {
					if err != nil {
						t.Fatal(err)
					}
					sc.check(t, r)
				}
			case 1:
				r, err := q.Next(ctx)
				if err != nil {
					t.Fatal(err)
				}
				sc.check(t, r)
			case 2:
				for r, err := range q.Records(ctx) {
					if err != nil {
						t.Fatal(err)
					}
					sc.check(t, r)
					break
				}
			}
		}
	}
	ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, total))
	if _, err := q.Read(ctx, buf[:10]); !errors.Is(err, watchq.ErrBufferTooSmall) {
		t.Fatalf("Read into 10 bytes = %v, want ErrBufferTooSmall", err)
	}
	for i := total + 1; i < total+5; i++ {
		ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, uint64(i)))
	}
	if s, err := q.Stats(ctx); err != nil || s.Written == 0 {
		t.Fatalf("stats: %+v %v", s, err)
	}
	c.Close() // the daemon closes the queue; what it holds stays readable
	for {
		r, err := q.Next(ctx)
		if err != nil {
			if !errors.Is(err, watchq.ErrClosed) {
				t.Fatalf("after the daemon closed the queue: %v, want ErrClosed", err)
			}
			break
		}
		sc.check(t, r)
	}
	if sc.records != total+5 || sc.lost != 0 {
		t.Fatalf("read %d records, %d lost; want %d, 0", sc.records, sc.lost, total+5)
	}
}

// TestRingLoss: a reader that does not read fills its queue of 32 notes,
// whose records the pump has moved into the ring (which would hold 170):
// the queue counts the records in the ring until the reader reads them, so
// exactly 32 arrive and then a loss record counting the rest, where one
// notification pipe of 32 notes puts it. The queue's Lost counter agrees;
// the producer (Post) never waits.
func TestRingLoss(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, q := deviceQueue(t, ctx, ip, ringQueue(32, 1), 1)
	const total = 2000
	for i := range total {
		ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, uint64(i)))
	}
	var sc seqChecker
	buf := make([]byte, 4096)
	for sc.next+sc.lossSeen < total {
		n, err := q.Read(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		for r, err := range record.Records(buf[:n]) {
			if err != nil {
				t.Fatal(err)
			}
			sc.check(t, r)
		}
		if sc.lossSeen != 0 && sc.next+sc.lossSeen == total {
			break
		}
	}
	// A record after the overflow, once the reader has caught up.
	ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, total))
	r, err := q.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc.check(t, r)
	s, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sc.lost != total-32 || sc.lost != s.Lost || sc.records != 33 {
		t.Fatalf("%d records read, %d lost by the loss records, %d by the daemon's count; posted %d, want 32 records, %d lost, then the last",
			sc.records, sc.lost, s.Lost, total+1, total-32)
	}
}

// rawRing is a ring queue driven without package client: the descriptors
// the daemon sent and the test's own mappings.
type rawRing struct {
	queue           uint32
	fds             []int
	mem, idx        []byte
	dataFD, idxFD   int
	wakeFD, spaceFD int
}

// createRawRing says hello on a new connection and creates a ring queue
// of pages pages and 512 notes watching the device list.
func createRawRing(t *testing.T, path string, pages uint32) (*net.UnixConn, *rawRing) {
	t.Helper()
	nc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	rt := func(op protocol.Op, id uint32, body []byte) ([]byte, []int) {
		if _, err := nc.Write(protocol.AppendMessage(nil, op, id, body)); err != nil {
			t.Fatal(err)
		}
		buf, oob := make([]byte, protocol.MaxReply), make([]byte, unix.CmsgSpace(4*protocol.RingFDs))
		n, oobn, _, _, err := nc.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		_, rb, err := protocol.ParseMessage(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		errno, rest, _ := protocol.ParseReply(rb)
		if errno != 0 {
			t.Fatalf("%v: %v %s", op, errno, rest)
		}
		var fds []int
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				f, _ := unix.ParseUnixRights(&m)
				fds = append(fds, f...)
			}
		}
		return rest, fds
	}
	rt(protocol.OpHello, 1, u32(protocol.Version))
	body, fds := rt(protocol.OpCreateRing, 2, u32(512, pages))
	rr, err := protocol.ParseRingReply(body)
	if err != nil || len(fds) != protocol.RingFDs {
		t.Fatalf("create-ring: %+v %v, %d fds", rr, err, len(fds))
	}
	r := &rawRing{queue: rr.Queue, fds: fds, dataFD: fds[protocol.RingData], idxFD: fds[protocol.RingIndex],
		wakeFD: fds[protocol.RingWake], spaceFD: fds[protocol.RingSpace]}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	if r.mem, err = unix.Mmap(r.dataFD, 0, shmring.HeaderSize+int(pages)*shmring.PageSize, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		t.Fatal(err)
	}
	if r.idx, err = unix.Mmap(r.idxFD, 0, shmring.IndexSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(r.mem); unix.Munmap(r.idx) })
	rt(protocol.OpWatchDevices, 3, u32(r.queue, 9, 0))
	return nc, r
}

func (r *rawRing) head() uint64 {
	return atomic.LoadUint64((*uint64)(unsafePointer(r.mem[shmring.OffHead:])))
}

// TestRingSealed: the consumer cannot write the data memfd in any way
// (F_SEAL_FUTURE_WRITE), nor resize either memfd (which would make the
// daemon's next access a SIGBUS), nor remove the seals.
func TestRingSealed(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\n")
	_, r := createRawRing(t, ip.Path, 1)
	if m, err := unix.Mmap(r.dataFD, 0, shmring.HeaderSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		unix.Munmap(m)
		t.Error("data memfd mapped writable")
	}
	if _, err := unix.Pwrite(r.dataFD, []byte{1}, shmring.OffHead); err == nil {
		t.Error("data memfd written with pwrite")
	}
	if err := unix.Fallocate(r.dataFD, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err == nil {
		t.Error("hole punched in the data memfd")
	}
	for _, fd := range []int{r.dataFD, r.idxFD} {
		if err := unix.Ftruncate(fd, 0); err == nil {
			t.Errorf("memfd %d truncated", fd)
		}
		if err := unix.Ftruncate(fd, 1<<20); err == nil {
			t.Errorf("memfd %d grown", fd)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); err == nil {
			t.Errorf("memfd %d took a new seal", fd)
		}
	}
	if m, err := unix.Mmap(r.idxFD, 0, shmring.IndexSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		t.Errorf("index memfd not writable: %v", err)
	} else {
		unix.Munmap(m)
	}
	ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, 0))
	waitFor(t, "the record in the ring", func() bool { return r.head() == 24 })
}

// TestRingWakeOnlyWhenSleeping: the daemon writes the wake eventfd only
// while the consumer's sleeping flag is set.
func TestRingWakeOnlyWhenSleeping(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\n")
	_, r := createRawRing(t, ip.Path, 1)
	ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, 0))
	waitFor(t, "the first record in the ring", func() bool { return r.head() == 24 })
	var v [8]byte
	if _, err := unix.Read(r.wakeFD, v[:]); err != unix.EAGAIN {
		t.Fatalf("wake eventfd written for an awake consumer: %v", err)
	}
	atomic.StoreUint32((*uint32)(unsafePointer(r.idx[shmring.OffSleeping:])), 1)
	ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, 1))
	pfd := []unix.PollFd{{Fd: int32(r.wakeFD), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 20000); n != 1 || err != nil {
		t.Fatalf("no wake-up for a sleeping consumer: %d %v", n, err)
	}
	if n, err := unix.Read(r.wakeFD, v[:]); n != 8 || err != nil || binary.NativeEndian.Uint64(v[:]) != 1 {
		t.Fatalf("wake eventfd: %d %v %x, want one write", n, err, v)
	}
	if h := r.head(); h != 48 {
		t.Fatalf("head %d after the wake-up, want 48", h)
	}
}

// TestRingHostileIndex: a consumer that writes garbage into its index
// (tails ahead of the head, far behind it, random; the sleeping flag
// random; the space eventfd hammered) loses only its own records: the
// daemon neither stalls nor crashes, another ring client and a pipe client
// receive every record in order, and the hostile queue still closes and
// gives its charges back.
func TestRingHostileIndex(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, r := createRawRing(t, ip.Path, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tail := (*uint64)(unsafePointer(r.idx[shmring.OffTail:]))
		sleeping := (*uint32)(unsafePointer(r.idx[shmring.OffSleeping:]))
		rng := rand.New(rand.NewPCG(1, 2))
		one := [8]byte{1}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h := r.head()
			switch i % 5 {
			case 0:
				atomic.StoreUint64(tail, rng.Uint64())
			case 1:
				atomic.StoreUint64(tail, h+1+rng.Uint64N(1<<20)) // ahead of the head
			case 2:
				atomic.StoreUint64(tail, h-shmring.PageSize-1-rng.Uint64N(1<<20)) // too far behind
			case 3:
				atomic.StoreUint64(tail, h-rng.Uint64N(shmring.PageSize)) // plausible, wrong
			case 4:
				atomic.StoreUint64(tail, h) // honest, now and then
			}
			atomic.StoreUint32(sleeping, rng.Uint32())
			unix.Write(r.spaceFD, one[:])
			if i%64 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	c, err := client.Dial(ctx, ip.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good, err := c.CreateRingQueue(ctx, 512, 1)
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := c.CreateQueue(ctx, 512)
	if err != nil {
		t.Fatal(err)
	}
	// Closed at the end, and so kept alive until then: a pipe queue whose
	// client.Queue the collector took would be released (its pipe's read
	// end closed), and the count of queues below would be off.
	defer good.Close()
	defer pipe.Close()
	for i, q := range []*client.Queue{good, pipe} {
		if _, err := q.WatchDevices(ctx, record.Tag(i)); err != nil {
			t.Fatal(err)
		}
	}
	const total = 5000
	var checkers [2]seqChecker
	for posted := 0; posted < total; {
		for range 100 {
			ip.Devices.Post(blockErrorRecord(record.BlockErrorIO, uint64(posted)))
			posted++
		}
		for i, q := range []*client.Queue{good, pipe} {
			for checkers[i].records < posted {
				rec, err := q.Next(ctx)
				if err != nil {
					t.Fatalf("queue %d: %v", i, err)
				}
				checkers[i].check(t, rec)
			}
		}
	}
	for i := range checkers {
		if checkers[i].lost != 0 {
			t.Errorf("queue %d lost %d records", i, checkers[i].lost)
		}
	}
	close(stop)
	wg.Wait()
	root := dialRaw(t, ip.Path).hello(t)
	before := root.serverStats(t, false)
	nc.Close() // the hostile client goes; its queue closes
	waitFor(t, "the hostile queue's charges given back", func() bool {
		return root.serverStats(t, false).AllQueues == before.AllQueues-1
	})
	if closed := atomic.LoadUint32((*uint32)(unsafePointer(r.mem[shmring.OffClosed:]))); closed != 1 {
		t.Errorf("hostile ring's closed flag %d after its queue closed", closed)
	}
}

// TestRingCharged: a ring queue charges its uid its engine pages plus the
// ring's header, index and data pages before anything is allocated, and
// gives them back when it closes; past the uid's pages it is refused with
// EPERM.
func TestRingCharged(t *testing.T) {
	ip := startInProcess(t, "* watch=devices\nlimits * pages=100\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	root := dialRaw(t, ip.Path).hello(t)
	base := root.serverStats(t, false)
	c, err := client.Dial(ctx, ip.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, err := c.CreateRingQueue(ctx, 64, 16)
	if err != nil {
		t.Fatal(err)
	}
	if s := root.serverStats(t, false); s.Pages-base.Pages != 2+16+2 {
		t.Errorf("ring queue of 64 notes and 16 pages charged %d pages, want 20", s.Pages-base.Pages)
	}
	if _, err := c.CreateRingQueue(ctx, 64, 128); !errors.Is(err, syscall.EPERM) {
		t.Errorf("ring past the uid's pages: %v, want EPERM", err)
	}
	if _, err := c.CreateRingQueue(ctx, 64, 3); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("ring of 3 pages: %v, want EINVAL", err)
	}
	q.Close()
	waitFor(t, "the ring's pages given back", func() bool { return root.serverStats(t, false).Pages == base.Pages })
}

// TestRingCReader: a C program built against include/watchq/ring.h reads
// a ring queue: 700 publisher records (more than the one-page ring holds,
// so it wraps; never more unread than the engine queue holds, so none can
// be lost whatever the reader's or the pump's speed) in order, packed two
// to a read, then the removal record, then end of file when the queue
// closes.
func TestRingCReader(t *testing.T) {
	gcc := testenv.RequireCommand(t, "gcc")
	testenv.RequireFile(t, "/usr/include/linux/watch_queue.h")
	bin := filepath.Join(t.TempDir(), "readring")
	if out, err := exec.Command(gcc, "-Wall", "-Werror", "-O2", "-I", "../include", "-o", bin, "../testdata/daemon/readring.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	ip := startInProcess(t, "* watch=devices,0x800020 publish=0x800020\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, r := createRawRing(t, ip.Path, 1)
	pub, err := client.Dial(ctx, ip.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// The raw connection's queue watches the device list; this test
	// wants the publisher type instead.
	rt := func(op protocol.Op, body []byte) {
		if _, err := nc.Write(protocol.AppendMessage(nil, op, 9, body)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, protocol.MaxReply)
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		_, rb, _ := protocol.ParseMessage(buf[:n])
		if errno, rest, _ := protocol.ParseReply(rb); errno != 0 {
			t.Fatalf("%v: %v %s", op, errno, rest)
		}
	}
	rt(protocol.OpWatchPublisher, u32(r.queue, 0x800020, 5))
	publish := func(i int) {
		rec := make([]byte, 16)
		record.Header{Type: 0x800020, Info: record.MakeInfo(16, 0, 0)}.Put(rec)
		binary.NativeEndian.PutUint64(rec[8:], uint64(i))
		if err := pub.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	// 300 before the reader starts: the ring's 256 and 44 in the engine
	// queue, so its first read finds two records to pack.
	for i := range 300 {
		publish(i)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin)
	// Duplicates, each an os.File closed once the child has them (an
	// os.File left to its finalizer would close a number the daemon in
	// this process may have reused by then).
	for _, fd := range r.fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(d), "ring"))
	}
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Start()
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	// Start made the descriptions it passed blocking (os.File.Fd), the
	// daemon's eventfds among them: make them non-blocking again.
	for _, fd := range r.fds {
		unix.SetNonblock(fd, true)
	}
	// The rest within 200 records of what the reader has consumed (its
	// tail, in the index this test maps too): none can be lost.
	tail := (*uint64)(unsafePointer(r.idx[shmring.OffTail:]))
	for i := 300; i < 700; i++ {
		for uint64(i-200)*16 > atomic.LoadUint64(tail) {
			time.Sleep(time.Millisecond)
			if ctx.Err() != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Logf("C: %s", out.String())
				t.Fatalf("the reader consumed %d bytes of %d records; head %d closed %d waiting %d sleeping %d", atomic.LoadUint64(tail), i,
					r.head(), r.mem[shmring.OffClosed], r.mem[shmring.OffWaiting], r.idx[shmring.OffSleeping])
			}
		}
		publish(i)
	}
	rt(protocol.OpWatchPublisher, u32(r.queue, 0x800020, 0xffffffff))
	// Closing flushes only what has room in the ring (as closing a pipe
	// queue does): wait for the reader to take everything first.
	for atomic.LoadUint64(tail) < 700*16+record.RemovalSize && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	rt(protocol.OpCloseQueue, u32(r.queue))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("readring: %v\n%s\nhead %d closed %d", err, out.String(), r.head(), r.mem[shmring.OffClosed])
	}
	if got, want := out.String(), "records=700 removals=1 other=0 packed=1\n-- END --\n"; got != want {
		t.Errorf("readring printed:\n%s\nwant:\n%s\nhead %d closed %d", got, want, r.head(), r.mem[shmring.OffClosed])
	}
}
