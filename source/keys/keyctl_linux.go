//go:build linux

package keys

import (
	"errors"

	"golang.org/x/sys/unix"
)

// resolve turns a key id into a serial. Special ids (KEY_SPEC_*) are looked
// up with creation, as keyctl_watch_key's lookup_user_key(id,
// KEY_LOOKUP_CREATE, KEY_NEED_VIEW) does; serials are returned as they are.
// Corresponds to security/keys/keyctl.c:keyctl_get_keyring_ID.
func resolve(id int32, create bool) (int32, error) {
	if id > 0 {
		return id, nil
	}
	if id < unix.KEY_SPEC_REQUESTOR_KEYRING || id == 0 {
		return 0, &Error{Op: "resolve", Key: id, Err: unix.EINVAL}
	}
	s, err := unix.KeyctlGetKeyringID(int(id), create)
	if err != nil {
		return 0, &Error{Op: "keyctl(KEYCTL_GET_KEYRING_ID)", Key: id, Err: err}
	}
	return int32(s), nil
}

// describe returns KEYCTL_DESCRIBE of serial, under the calling thread's
// credentials: it needs View (EACCES otherwise), exactly the permission
// keyctl_watch_key asks for.
func describe(serial int32) (Description, error) {
	s, err := unix.KeyctlString(unix.KEYCTL_DESCRIBE, int(serial))
	if err != nil {
		return Description{}, &Error{Op: "keyctl(KEYCTL_DESCRIBE)", Key: serial, Err: err}
	}
	return ParseDescription(s)
}

// readKey reads key serial's payload (KEYCTL_READ) into buf, growing it;
// keyring payloads are arrays of serials.
func readKey(serial int32, buf []byte) ([]byte, error) {
	for {
		n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, int(serial), buf[:cap(buf)], 0)
		if err != nil {
			return buf[:0], err
		}
		if n <= cap(buf) {
			return buf[:n], nil
		}
		buf = make([]byte, n+n/4)
	}
}

// stateOf maps a lookup errno to a key state.
func stateOf(err error) (keyState, bool) {
	switch {
	case errors.Is(err, unix.ENOKEY):
		return stateGone, true
	case errors.Is(err, unix.EKEYREVOKED):
		return stateRevoked, true
	case errors.Is(err, unix.EKEYEXPIRED):
		return stateExpired, true
	case errors.Is(err, unix.EACCES):
		return stateHidden, true
	}
	return 0, false
}
