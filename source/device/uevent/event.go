// Package uevent receives and parses the kernel's device events: the
// datagrams lib/kobject_uevent.c broadcasts on NETLINK_KOBJECT_UEVENT.
//
// A kernel uevent datagram is "ACTION@DEVPATH\0" followed by
// NUL-separated "KEY=VALUE" strings (kobject_uevent_env builds them with
// add_uevent_var into a struct kobj_uevent_env). Unlike rtnetlink, the
// datagrams carry no nlmsghdr, so this package reads them raw.
package uevent

import (
	"bytes"
	"errors"
	"fmt"
)

// Limits, from include/linux/kobject.h.
const (
	// MaxSize is the largest datagram the kernel builds
	// (UEVENT_BUFFER_SIZE).
	MaxSize = 2048
	// MaxVars is the most KEY=VALUE pairs an event carries
	// (UEVENT_NUM_ENVP).
	MaxVars = 64
)

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("uevent: malformed datagram")

// Action is a uevent action (kobject_actions[] in lib/kobject_uevent.c).
type Action uint8

// Actions, in the kernel's enum kobject_action order.
const (
	ActionUnknown Action = iota
	ActionAdd
	ActionRemove
	ActionChange
	ActionMove
	ActionOnline
	ActionOffline
	ActionBind
	ActionUnbind
)

var actionNames = [...]string{"unknown", "add", "remove", "change", "move", "online", "offline", "bind", "unbind"}

// String is the kernel's name for the action.
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}

func parseAction(b []byte) Action {
	// A switch on string(b) does not allocate.
	switch string(b) {
	case "add":
		return ActionAdd
	case "remove":
		return ActionRemove
	case "change":
		return ActionChange
	case "move":
		return ActionMove
	case "online":
		return ActionOnline
	case "offline":
		return ActionOffline
	case "bind":
		return ActionBind
	case "unbind":
		return ActionUnbind
	}
	return ActionUnknown
}

// Var is one KEY=VALUE pair. Both slices alias the datagram.
type Var struct {
	Key, Value []byte
}

// Event is one parsed uevent. Its byte slices alias the buffer it was
// parsed from, so it is valid only until that buffer is reused; Parse
// never allocates.
type Event struct {
	Action  Action
	Header  []byte // "ACTION@DEVPATH"
	DevPath []byte // from the header, e.g. /devices/virtual/block/loop0
	Vars    []Var  // in datagram order; at most MaxVars

	vars [MaxVars]Var
}

// Get returns the value of key, or nil if the event does not carry it.
func (e *Event) Get(key string) []byte {
	for i := range e.Vars {
		if string(e.Vars[i].Key) == key {
			return e.Vars[i].Value
		}
	}
	return nil
}

// Is reports whether key is present with exactly value.
func (e *Event) Is(key, value string) bool {
	v := e.Get(key)
	return v != nil && string(v) == value
}

// Name is the kernel device name, dev_name(): the last element of DEVPATH
// ("loop0", "3-7.7", "usb3").
func (e *Event) Name() []byte {
	p := e.DevPath
	if i := bytes.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	return p
}

// String formats the event like `udevadm monitor --kernel --property`.
func (e *Event) String() string {
	var b bytes.Buffer
	b.Write(e.Header)
	for _, v := range e.Vars {
		fmt.Fprintf(&b, " %s=%s", v.Key, v.Value)
	}
	return b.String()
}

// Parse parses one kernel uevent datagram into e, reusing e's storage.
// It accepts exactly what kobject_uevent_env produces and rejects, with an
// error wrapping ErrMalformed, anything else: an empty datagram or one
// longer than MaxSize, a header without '@' or with an empty action or
// devpath, a devpath not starting with '/', a variable without '=' or with
// an empty key, more than MaxVars variables, an ACTION or DEVPATH variable
// contradicting the header. The final NUL is optional.
func Parse(e *Event, b []byte) error {
	e.Vars = e.vars[:0]
	e.Header, e.DevPath, e.Action = nil, nil, ActionUnknown
	if len(b) > MaxSize {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(b), MaxSize)
	}
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", ErrMalformed)
	}
	// Kernel datagrams always end in NUL; tolerate its absence.
	if b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	hdr, rest, _ := bytes.Cut(b, []byte{0})
	at := bytes.IndexByte(hdr, '@')
	if at <= 0 || at == len(hdr)-1 {
		return fmt.Errorf("%w: header %q is not ACTION@DEVPATH", ErrMalformed, truncate(hdr))
	}
	e.Header = hdr
	e.DevPath = hdr[at+1:]
	if e.DevPath[0] != '/' {
		return fmt.Errorf("%w: devpath %q does not start with /", ErrMalformed, truncate(e.DevPath))
	}
	e.Action = parseAction(hdr[:at])
	off := len(hdr) + 1
	for len(rest) > 0 {
		kv, next, _ := bytes.Cut(rest, []byte{0})
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok || len(k) == 0 {
			return fmt.Errorf("%w: variable %q at offset %d is not KEY=VALUE", ErrMalformed, truncate(kv), off)
		}
		if len(e.Vars) == MaxVars {
			return fmt.Errorf("%w: more than %d variables", ErrMalformed, MaxVars)
		}
		e.Vars = append(e.Vars, Var{Key: k, Value: v})
		off += len(kv) + 1
		rest = next
	}
	if a := e.Get("ACTION"); a != nil && !bytes.Equal(a, hdr[:at]) {
		return fmt.Errorf("%w: ACTION=%q contradicts header %q", ErrMalformed, truncate(a), truncate(hdr))
	}
	if p := e.Get("DEVPATH"); p != nil && !bytes.Equal(p, e.DevPath) {
		return fmt.Errorf("%w: DEVPATH=%q contradicts header %q", ErrMalformed, truncate(p), truncate(hdr))
	}
	return nil
}

// truncate bounds what an error message quotes from hostile input.
func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
