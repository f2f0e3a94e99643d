package keys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Key permission bits (include/uapi/linux/keyctl.h, KEY_{POS,USR,GRP,OTH}_VIEW).
const (
	permPosView = 0x01000000
	permUsrView = 0x00010000
	permGrpView = 0x00000100
	permOthView = 0x00000001
)

// Description is what KEYCTL_DESCRIBE reports about a key
// (security/keys/keyctl.c:keyctl_describe_key): "type;uid;gid;perm;desc".
type Description struct {
	Type        string // key type: "user", "keyring", "logon", ...
	UID, GID    uint32 // owner; 0xffffffff is "unset" (gid of some keys)
	Perm        uint32 // KEY_POS_*|KEY_USR_*|KEY_GRP_*|KEY_OTH_* bits
	Description string // the key's description
}

// ParseDescription decodes a KEYCTL_DESCRIBE string.
func ParseDescription(s string) (Description, error) {
	f := strings.SplitN(strings.TrimRight(s, "\x00"), ";", 5)
	if len(f) != 5 {
		return Description{}, fmt.Errorf("keys: malformed key description %q", s)
	}
	uid, err1 := strconv.ParseInt(f[1], 10, 64)
	gid, err2 := strconv.ParseInt(f[2], 10, 64)
	perm, err3 := strconv.ParseUint(f[3], 16, 32)
	if err := errors.Join(err1, err2, err3); err != nil || f[0] == "" {
		return Description{}, fmt.Errorf("keys: malformed key description %q", s)
	}
	return Description{Type: f[0], UID: uint32(uid), GID: uint32(gid), Perm: uint32(perm), Description: f[4]}, nil
}

// Mode maps the key's user, group and other View bits onto the engine's
// Object.Mode (0o400, 0o40, 0o4). Possessor View has no counterpart: the
// engine cannot know what a remote watcher possesses. A key that grants View
// to none of them gets 0o1000, which no bit check passes (Mode 0 would mean
// "anyone").
func (d Description) Mode() uint32 {
	var m uint32
	if d.Perm&permUsrView != 0 {
		m |= 0o400
	}
	if d.Perm&permGrpView != 0 {
		m |= 0o40
	}
	if d.Perm&permOthView != 0 {
		m |= 0o4
	}
	if m == 0 {
		m = 0o1000
	}
	return m
}

// procKey is one line of /proc/keys (security/keys/proc.c:proc_keys_show):
//
//	%08x %c%c%c%c%c%c%c %5d %4s %08x %5d %5d %-9.9s <type-specific description>
type procKey struct {
	Serial   int32
	Flags    string // 7 chars: I R D Q U N i, '-' when clear
	Timeout  string // "perm", "expd", or N[smhdw] remaining
	Perm     uint32
	UID, GID uint32
	Type     string
	Desc     string // the type's ->describe() output (e.g. "foo: 3")
}

// flag reports whether /proc/keys flag c is set.
func (k *procKey) flag(c byte) bool { return strings.IndexByte(k.Flags, c) >= 0 }

// parseProcKeysLine decodes one /proc/keys line.
func parseProcKeysLine(line []byte) (procKey, error) {
	var k procKey
	f := make([][]byte, 0, 8)
	rest := line
	for len(f) < 8 {
		rest = bytes.TrimLeft(rest, " ")
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			if len(rest) == 0 || len(f) < 7 {
				return k, fmt.Errorf("keys: malformed /proc/keys line %q", line)
			}
			i = len(rest)
		}
		f = append(f, rest[:i])
		rest = rest[i:]
	}
	serial, err1 := strconv.ParseUint(string(f[0]), 16, 32)
	perm, err2 := strconv.ParseUint(string(f[4]), 16, 32)
	uid, err3 := strconv.ParseInt(string(f[5]), 10, 64)
	gid, err4 := strconv.ParseInt(string(f[6]), 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil || len(f[1]) != 7 || serial == 0 || serial > 0x7fffffff {
		return k, fmt.Errorf("keys: malformed /proc/keys line %q", line)
	}
	if _, _, err := parseTimeout(string(f[3])); err != nil {
		return k, err
	}
	k = procKey{
		Serial: int32(serial), Flags: string(f[1]), Timeout: string(f[3]), Perm: uint32(perm),
		UID: uint32(uid), GID: uint32(gid), Type: string(f[7]),
	}
	if len(rest) > 0 {
		k.Desc = strings.TrimLeft(string(rest), " ")
	}
	return k, nil
}

// parseTimeout decodes the timeout column: the remaining time is in
// [v*unit, (v+1)*unit) seconds. "perm" (no expiry) gives unit 0; "expd"
// gives v = unit = -1.
func parseTimeout(s string) (v, unit int64, err error) {
	switch s {
	case "perm":
		return 0, 0, nil
	case "expd":
		return -1, -1, nil
	}
	if len(s) < 2 {
		return 0, 0, fmt.Errorf("keys: malformed timeout %q", s)
	}
	switch s[len(s)-1] {
	case 's':
		unit = 1
	case 'm':
		unit = 60
	case 'h':
		unit = 3600
	case 'd':
		unit = 86400
	case 'w':
		unit = 7 * 86400
	default:
		return 0, 0, fmt.Errorf("keys: malformed timeout %q", s)
	}
	v, err = strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || v < 0 || v > 1<<40 {
		return 0, 0, fmt.Errorf("keys: malformed timeout %q", s)
	}
	return v, unit, nil
}

// parseKeyring decodes KEYCTL_READ of a keyring: an array of key_serial_t
// in host order (security/keys/keyring.c:keyring_read). A trailing partial
// serial is an error.
func parseKeyring(b []byte, dst []int32) ([]int32, error) {
	if len(b)%4 != 0 {
		return dst, fmt.Errorf("keys: keyring contents of %d bytes", len(b))
	}
	for i := 0; i < len(b); i += 4 {
		dst = append(dst, int32(binary.NativeEndian.Uint32(b[i:])))
	}
	return dst, nil
}
