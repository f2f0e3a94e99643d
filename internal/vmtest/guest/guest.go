// Package guest is the guest-side API of the vmtest harness. Tests built with
// the "vmtest" build tag run inside a qemu guest (see docs/testing.md) and use
// this package to tell where they are (InVM) and to ask the host runner to act
// on the guest's hardware at the right moment: hot-plug and unplug devices
// (DeviceAdd, DeviceDel, AddUSBStorage), run any QMP command (QMP), or hand a
// file back to the host (SaveArtifact).
//
// Every host request is synchronous: when it returns nil the host has
// finished the action (for DeviceDel: qemu emitted DEVICE_DELETED). The
// guest kernel's reaction (uevents, new block devices) follows
// asynchronously; wait for it with UeventListener.
package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/watchq/watchq/internal/vmtest/internal/proto"
)

// InVM reports whether the process runs inside the vmtest guest (the guest
// /init sets WATCHQ_VMTEST=1 for every test binary).
func InVM() bool { return os.Getenv(proto.EnvInVM) == "1" }

// ErrNotInVM is returned by host requests made outside the vmtest guest.
var ErrNotInVM = errors.New("vmtest guest: not running inside the vmtest VM (WATCHQ_VMTEST unset)")

// client owns the control port for the whole process: virtio_console lets
// only one file be open per port, so every goroutine shares this one.
type client struct {
	mu     sync.Mutex
	f      *os.File
	r      *bufio.Reader
	nextID uint64
}

var ctl client

// findPort returns /dev/vportNpM of the port named proto.PortName.
func findPort() (string, error) {
	names, err := filepath.Glob("/sys/class/virtio-ports/*/name")
	if err != nil {
		return "", err
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == proto.PortName {
			return "/dev/" + filepath.Base(filepath.Dir(n)), nil
		}
	}
	return "", fmt.Errorf("vmtest guest: no virtio-serial port named %q in /sys/class/virtio-ports (CONFIG_VIRTIO_CONSOLE, runner's virtserialport)", proto.PortName)
}

// call sends one request and waits for its response, honouring ctx.
func (c *client) call(ctx context.Context, op string, args, result any) error {
	if !InVM() {
		return ErrNotInVM
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		dev, err := findPort()
		if err != nil {
			return err
		}
		// A character device that supports poll joins Go's netpoller, so
		// read deadlines work on it.
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("vmtest guest: open control port: %w", err)
		}
		c.f, c.r = f, bufio.NewReader(f)
	}
	c.nextID++
	req := proto.Request{ID: c.nextID, Op: op}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("vmtest guest: %s: marshal args: %w", op, err)
		}
		req.Args = b
	}
	line, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := c.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("vmtest guest: %s: write control port: %w", op, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Minute)
	}
	// Deadline first, then the cancel hook, so a ctx that is already done
	// cannot have its "now" deadline overwritten.
	c.f.SetReadDeadline(deadline)
	defer c.f.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { c.f.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		b, err := c.r.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("vmtest guest: %s: waiting for host: %w", op, err)
		}
		var resp proto.Response
		if err := json.Unmarshal(b, &resp); err != nil {
			return fmt.Errorf("vmtest guest: %s: bad response %q: %w", op, b, err)
		}
		if resp.ID != req.ID {
			continue // answer to an earlier request that timed out
		}
		if !resp.OK {
			return fmt.Errorf("vmtest host: %s: %s", op, resp.Error)
		}
		if result != nil && len(resp.Result) > 0 {
			if err := json.Unmarshal(resp.Result, result); err != nil {
				return fmt.Errorf("vmtest guest: %s: decode result: %w", op, err)
			}
		}
		return nil
	}
}
