package keys

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/watchq/watchq/record"
)

// Special key ids (KEY_SPEC_* in <linux/keyctl.h>).
const (
	SpecThread      int32 = -1 // @t: the thread keyring
	SpecProcess     int32 = -2 // @p: the process keyring
	SpecSession     int32 = -3 // @s: the session keyring
	SpecUser        int32 = -4 // @u: the user keyring
	SpecUserSession int32 = -5 // @us: the user session keyring
	SpecReqkeyAuth  int32 = -7 // @a: the request_key authorisation key
)

// Backend selects how a Source learns about key changes.
type Backend uint8

// Backends.
const (
	Auto   Backend = iota // Kernel if the kernel has the facility, else Traced if it loads, else Poll
	Kernel                // KEYCTL_WATCH_KEY on a notification pipe
	Poll                  // periodic diff of /proc/keys and KEYCTL_READ
	Traced                // BPF on the key system calls, and a poll for the rest (traced_linux.go)
)

// String names the backend.
func (b Backend) String() string {
	switch b {
	case Auto:
		return "auto"
	case Kernel:
		return "kernel"
	case Poll:
		return "poll"
	case Traced:
		return "traced"
	}
	return "backend(" + strconv.Itoa(int(b)) + ")"
}

// ParseID parses a key id as keyctl(1) spells it: a decimal or 0x serial,
// or one of the special ids @t, @p, @s, @u, @us, @a.
func ParseID(s string) (int32, error) {
	switch s {
	case "@t":
		return SpecThread, nil
	case "@p":
		return SpecProcess, nil
	case "@s":
		return SpecSession, nil
	case "@u":
		return SpecUser, nil
	case "@us":
		return SpecUserSession, nil
	case "@a":
		return SpecReqkeyAuth, nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 0, 32)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("keys: bad key id %q (want a serial or @t, @p, @s, @u, @us, @a)", s)
	}
	return int32(v), nil
}

// ObjectID is the engine's object id for the key with this serial: the id
// its removal record carries (watch->id = key->serial). serial is a
// resolved, positive key_serial_t.
func ObjectID(serial int32) record.ObjectID { return record.ObjectID(uint32(serial)) }
