package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmpClient speaks the QEMU Machine Protocol (docs/interop/qmp-spec): a JSON
// greeting, "qmp_capabilities" to leave negotiation mode, then commands with
// an "id" answered by {"return":…} or {"error":…}, interleaved with
// asynchronous {"event":…} messages.
type qmpClient struct {
	conn net.Conn
	enc  *json.Encoder

	mu      sync.Mutex
	nextID  int
	pending map[string]chan qmpMsg
	subs    map[int]*qmpSub
	nextSub int
	closed  error
}

type qmpMsg struct {
	ID     string          `json:"id,omitempty"`
	Return json.RawMessage `json:"return,omitempty"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error,omitempty"`
	Event string          `json:"event,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	QMP   json.RawMessage `json:"QMP,omitempty"`
}

type qmpSub struct {
	event string
	match func(data json.RawMessage) bool
	ch    chan json.RawMessage
}

// dialQMP connects to qemu's -qmp unix socket, retrying while qemu starts.
func dialQMP(ctx context.Context, path string) (*qmpClient, error) {
	var conn net.Conn
	var err error
	for {
		conn, err = net.Dial("unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to QMP socket %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	c := &qmpClient{conn: conn, enc: json.NewEncoder(conn), pending: map[string]chan qmpMsg{}, subs: map[int]*qmpSub{}}
	dec := json.NewDecoder(conn)
	var greeting qmpMsg
	if err := dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("QMP greeting: %v", err)
	}
	go c.readLoop(dec)
	if _, err := c.execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *qmpClient) readLoop(dec *json.Decoder) {
	for {
		var m qmpMsg
		if err := dec.Decode(&m); err != nil {
			c.mu.Lock()
			c.closed = fmt.Errorf("QMP connection closed: %w", err)
			for id, ch := range c.pending {
				close(ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		if m.Event != "" {
			for _, s := range c.subs {
				if s.event == m.Event && (s.match == nil || s.match(m.Data)) {
					select {
					case s.ch <- m.Data:
					default:
					}
				}
			}
		} else if ch, ok := c.pending[m.ID]; ok {
			delete(c.pending, m.ID)
			ch <- m
		}
		c.mu.Unlock()
	}
}

// subscribe registers interest in an event before the command that causes it,
// so the event cannot be missed. Call the returned cancel when done.
func (c *qmpClient) subscribe(event string, match func(json.RawMessage) bool) (<-chan json.RawMessage, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextSub++
	id := c.nextSub
	s := &qmpSub{event: event, match: match, ch: make(chan json.RawMessage, 4)}
	c.subs[id] = s
	return s.ch, func() {
		c.mu.Lock()
		delete(c.subs, id)
		c.mu.Unlock()
	}
}

// execute runs one QMP command and returns its "return" value.
func (c *qmpClient) execute(ctx context.Context, cmd string, args json.RawMessage) (json.RawMessage, error) {
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		return nil, c.closed
	}
	c.nextID++
	id := fmt.Sprintf("w%d", c.nextID)
	ch := make(chan qmpMsg, 1)
	c.pending[id] = ch
	req := map[string]any{"execute": cmd, "id": id}
	if len(args) > 0 {
		req["arguments"] = args
	}
	err := c.enc.Encode(req)
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("QMP %s: send: %w", cmd, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("QMP %s: %w", cmd, c.closed)
		}
		if m.Error != nil {
			return nil, fmt.Errorf("QMP %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		}
		return m.Return, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("QMP %s: %w", cmd, ctx.Err())
	}
}

// deviceDel unplugs the device with qdev id and waits for DEVICE_DELETED,
// which qemu emits once the guest released it (at once for USB; PCI needs
// the guest's cooperation).
func (c *qmpClient) deviceDel(ctx context.Context, id string) error {
	events, cancel := c.subscribe("DEVICE_DELETED", func(d json.RawMessage) bool {
		var v struct {
			Device string `json:"device"`
		}
		return json.Unmarshal(d, &v) == nil && v.Device == id
	})
	defer cancel()
	args, _ := json.Marshal(map[string]string{"id": id})
	if _, err := c.execute(ctx, "device_del", args); err != nil {
		return err
	}
	select {
	case <-events:
		return nil
	case <-ctx.Done():
		return errors.New("device_del " + id + ": no DEVICE_DELETED event: " + ctx.Err().Error())
	}
}

func (c *qmpClient) Close() error { return c.conn.Close() }
