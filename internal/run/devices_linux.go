//go:build linux && amd64

package run

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/client"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/device"
	"golang.org/x/sys/unix"
)

// Device watches: IocWatchDevices on a queue asks watchqd (through package
// client, as PROG's user: the supervisor runs with PROG's credentials and
// refuses when they differ) for a queue watching the device list, and
// relays its records into a watch list of the supervisor's engine with one
// watch, PROG's queue's, so that PROG's tag and filter apply as they do to
// key records. watchqd's policy decides which records the user may have.

// deviceWatch is a queue's watch on the device list, relayed from watchqd.
type deviceWatch struct {
	wl     *watchq.WatchList
	dq     *client.Queue
	cancel context.CancelFunc
	done   chan struct{}
}

func (d *deviceWatch) close() {
	d.cancel()
	d.dq.Close()
	<-d.done
}

// watchDevices serves IocWatchDevices on q for task tid: arg points to a
// struct watchq_watch_devices.
func (s *supervisor) watchDevices(q *kqueue, tid int, arg uint64) unix.Errno {
	var a [8]byte
	if err := readMem(tid, arg, a[:]); err != nil {
		return s.memErrno(tid, err)
	}
	tag, flags := int32(le.Uint32(a[0:])), le.Uint32(a[4:])
	if flags != 0 || tag < -1 || tag > 255 {
		return unix.EINVAL
	}
	q.mu.Lock()
	dw := q.devices
	if tag < 0 {
		q.devices = nil
	}
	q.mu.Unlock()
	if tag < 0 {
		if dw == nil {
			return unix.EBADSLT
		}
		err := dw.wl.Remove(q.eq, device.DevicesID) // the removal record
		dw.close()
		if err != nil {
			return errnoOf(err)
		}
		return 0
	}
	if dw != nil {
		return unix.EBUSY
	}
	cred, err := taskCred(tid)
	if err != nil {
		return unix.ESRCH
	}
	if !sameCred(cred) {
		s.sayOnce("devcred", "watch_devices in pid %d refused (EPERM): its credentials (%v) are not watchq run's, which watchqd judges", cred.PID, cred)
		return unix.EPERM
	}
	c, err := s.daemonClient()
	if err != nil {
		return unix.EOPNOTSUPP
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dq, err := c.CreateQueue(ctx, record.MaxNotes)
	if err != nil {
		return errnoOf(err)
	}
	if _, err := dq.WatchDevices(ctx, 0); err != nil {
		dq.Close()
		return errnoOf(err)
	}
	wl := s.eng.NewWatchList(watchq.Object{Kind: watchq.KindDevices})
	if err := wl.Add(q.eq, device.DevicesID, record.Tag(tag), cred); err != nil {
		dq.Close()
		return errnoOf(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	dw = &deviceWatch{wl: wl, dq: dq, cancel: rcancel, done: make(chan struct{})}
	q.mu.Lock()
	if q.devices != nil || q.closed {
		q.mu.Unlock()
		dw.close()
		return unix.EBUSY
	}
	q.devices = dw
	q.mu.Unlock()
	go dw.relay(rctx)
	return 0
}

// relay posts the daemon's records into the watch list until the watch
// ends. If the daemon ends it (it closed the queue, or destroyed the list),
// PROG's watch ends too, with its removal record.
func (d *deviceWatch) relay(ctx context.Context) {
	defer close(d.done)
	for rec, err := range d.dq.Records(ctx) {
		if err != nil {
			if ctx.Err() == nil {
				d.wl.Destroy()
			}
			return
		}
		switch {
		case rec.IsLoss():
			n := uint64(rec.Header().TypeInfo())
			d.wl.PostLoss(max(n, 1))
		case rec.IsRemoval():
			d.wl.Destroy()
			return
		default:
			d.wl.Post(rec, watchq.SystemCred, device.DevicesID)
		}
	}
}

// sameCred reports whether c has this process's effective credentials.
func sameCred(c *watchq.Cred) bool {
	if c.UID != uint32(os.Geteuid()) || c.GID != uint32(os.Getegid()) {
		return false
	}
	gs, err := os.Getgroups()
	if err != nil {
		return false
	}
	mine := make([]uint32, 0, len(gs))
	for _, g := range gs {
		mine = append(mine, uint32(g))
	}
	theirs := slices.Clone(c.Groups)
	slices.Sort(mine)
	slices.Sort(theirs)
	return slices.Equal(slices.Compact(mine), slices.Compact(theirs))
}

// daemonClient connects to watchqd on the first device watch.
func (s *supervisor) daemonClient() (*client.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.daemon != nil || s.daemonErr != nil {
		return s.daemon, s.daemonErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.cfg.Daemon)
	if err != nil {
		s.daemonErr = err
		fmt.Fprintf(s.stderr, "watchq run: device watches need watchqd: %v\n", err)
		return nil, err
	}
	s.daemon = c
	fmt.Fprintf(s.stderr, "watchq run: device records come from watchqd\n")
	return c, nil
}
