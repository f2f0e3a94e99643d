package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/watchq/watchq/internal/vmtest/internal/proto"
)

// controller serves the guest's requests on the virtio-serial control port
// (see package proto) by driving qemu over QMP.
type controller struct {
	qmp       *qmpClient
	workDir   string // images of usb_storage_add devices
	artifacts string // -artifacts directory, "" to discard
	storage   map[string]storageDev
	logf      func(format string, args ...any)
}

type storageDev struct{ node, image string }

// serve accepts qemu's connection to the control socket and answers requests
// until the connection ends.
func (c *controller) serve(ctx context.Context, ln net.Listener) {
	conn, err := ln.Accept()
	if err != nil {
		return
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var req proto.Request
		resp := proto.Response{}
		if err := json.Unmarshal(line, &req); err != nil {
			// Noise on the port (e.g. a guest process that wrote half a
			// line and died) is reported but does not end the session.
			c.logf("control: bad request %q: %v", strings.TrimSpace(string(line)), err)
			continue
		}
		resp.ID = req.ID
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		result, err := c.handle(rctx, req)
		cancel()
		if err != nil {
			resp.Error = err.Error()
			c.logf("control: %s failed: %v", req.Op, err)
		} else {
			resp.OK = true
			resp.Result = result
		}
		b, _ := json.Marshal(resp)
		if _, err := conn.Write(append(b, '\n')); err != nil {
			return
		}
	}
}

func (c *controller) handle(ctx context.Context, req proto.Request) (json.RawMessage, error) {
	switch req.Op {
	case proto.OpDeviceAdd:
		c.logf("control: device_add %s", req.Args)
		_, err := c.qmp.execute(ctx, "device_add", req.Args)
		return nil, err
	case proto.OpDeviceDel:
		var a proto.DeviceDelArgs
		if err := json.Unmarshal(req.Args, &a); err != nil || a.ID == "" {
			return nil, fmt.Errorf("device_del needs an id (%v)", err)
		}
		c.logf("control: device_del %s", a.ID)
		if err := c.qmp.deviceDel(ctx, a.ID); err != nil {
			return nil, err
		}
		if s, ok := c.storage[a.ID]; ok {
			delete(c.storage, a.ID)
			args, _ := json.Marshal(map[string]string{"node-name": s.node})
			if _, err := c.qmp.execute(ctx, "blockdev-del", args); err != nil {
				c.logf("control: blockdev-del %s: %v", s.node, err)
			}
			os.Remove(s.image)
		}
		return nil, nil
	case proto.OpUSBStorageAdd:
		return nil, c.usbStorageAdd(ctx, req.Args)
	case proto.OpQMP:
		var a proto.QMPArgs
		if err := json.Unmarshal(req.Args, &a); err != nil || a.Execute == "" {
			return nil, fmt.Errorf("qmp needs execute (%v)", err)
		}
		c.logf("control: qmp %s %s", a.Execute, a.Arguments)
		return c.qmp.execute(ctx, a.Execute, a.Arguments)
	case proto.OpArtifact:
		return nil, c.artifact(req.Args)
	}
	return nil, fmt.Errorf("unknown operation %q", req.Op)
}

func (c *controller) usbStorageAdd(ctx context.Context, raw json.RawMessage) error {
	var a proto.USBStorageArgs
	if err := json.Unmarshal(raw, &a); err != nil || a.ID == "" {
		return fmt.Errorf("usb_storage_add needs an id (%v)", err)
	}
	if a.Size <= 0 {
		a.Size = 16 << 20
	}
	if a.Bus == "" {
		a.Bus = "xhci.0"
	}
	if _, dup := c.storage[a.ID]; dup {
		return fmt.Errorf("usb_storage_add: id %q already in use", a.ID)
	}
	img := filepath.Join(c.workDir, "usb-"+a.ID+".img")
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	err = f.Truncate(a.Size)
	f.Close()
	if err != nil {
		return fmt.Errorf("usb_storage_add: image: %w", err)
	}
	node := "blk-" + a.ID
	c.logf("control: usb_storage_add %s (%d bytes, %s)", a.ID, a.Size, a.Bus)
	bd, _ := json.Marshal(map[string]any{
		"driver": "raw", "node-name": node,
		"file": map[string]any{"driver": "file", "filename": img},
	})
	if _, err := c.qmp.execute(ctx, "blockdev-add", bd); err != nil {
		os.Remove(img)
		return err
	}
	dev, _ := json.Marshal(map[string]any{"driver": "usb-storage", "id": a.ID, "bus": a.Bus, "drive": node})
	if _, err := c.qmp.execute(ctx, "device_add", dev); err != nil {
		args, _ := json.Marshal(map[string]string{"node-name": node})
		c.qmp.execute(ctx, "blockdev-del", args)
		os.Remove(img)
		return err
	}
	c.storage[a.ID] = storageDev{node: node, image: img}
	return nil
}

func (c *controller) artifact(raw json.RawMessage) error {
	var a proto.ArtifactArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("artifact: %w", err)
	}
	name := filepath.FromSlash(a.Name)
	if a.Name == "" || filepath.IsAbs(name) || !filepath.IsLocal(name) {
		return fmt.Errorf("artifact name %q must be a relative path without \"..\" elements", a.Name)
	}
	if c.artifacts == "" {
		return nil // no -artifacts: discard
	}
	p := filepath.Join(c.artifacts, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	c.logf("control: artifact %s (%d bytes)", p, len(a.Data))
	return os.WriteFile(p, a.Data, 0o644)
}
