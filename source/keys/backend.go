package keys

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Backend selects how a Source learns about key changes.
type Backend uint8

// Backends.
const (
	Auto   Backend = iota // Kernel if the kernel has the facility, else Poll
	Kernel                // KEYCTL_WATCH_KEY on a notification pipe
	Poll                  // periodic diff of /proc/keys and KEYCTL_READ
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
	}
	return "backend(" + strconv.Itoa(int(b)) + ")"
}

// ParseID parses a key id as keyctl(1) spells it: a decimal or 0x serial,
// or a special id @t, @p, @s, @u, @us, @g (group: not supported by the
// kernel), @a (the request key authorisation key), or %:name is not
// accepted.
func ParseID(s string) (int32, error) {
	switch s {
	case "@t":
		return unix.KEY_SPEC_THREAD_KEYRING, nil
	case "@p":
		return unix.KEY_SPEC_PROCESS_KEYRING, nil
	case "@s":
		return unix.KEY_SPEC_SESSION_KEYRING, nil
	case "@u":
		return unix.KEY_SPEC_USER_KEYRING, nil
	case "@us":
		return unix.KEY_SPEC_USER_SESSION_KEYRING, nil
	case "@a":
		return unix.KEY_SPEC_REQKEY_AUTH_KEY, nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 0, 32)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("keys: bad key id %q (want a serial or @t, @p, @s, @u, @us, @a)", s)
	}
	return int32(v), nil
}
