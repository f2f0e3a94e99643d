//go:build linux

package keys

import (
	"errors"

	"golang.org/x/sys/unix"
)

// resolve turns a key id into a serial. Special ids (KEY_SPEC_*) are looked
// up with creation, as keyctl_watch_key's lookup_user_key(id,
// KEY_LOOKUP_CREATE, KEY_NEED_VIEW) does for a watch and an unwatch alike;
// serials are returned as they are.
// Corresponds to security/keys/keyctl.c:keyctl_get_keyring_ID.
func resolve(id int32) (int32, error) {
	if id > 0 {
		return id, nil
	}
	if id < unix.KEY_SPEC_REQUESTOR_KEYRING || id == 0 {
		return 0, &Error{Op: "resolve", Key: id, Err: unix.EINVAL}
	}
	s, err := unix.KeyctlGetKeyringID(int(id), true)
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

// lookupView makes the check keyctl_watch_key makes before it touches a
// watch, for a tag and for -1 alike: lookup_user_key(id,
// KEY_LOOKUP_CREATE, KEY_NEED_VIEW) under the calling thread's
// credentials (security/keys/process_keys.c). It returns the key's
// description.
//
// KEYCTL_DESCRIBE checks View, and revocation and expiry (key_validate),
// but it looks the key up with KEY_LOOKUP_PARTIAL, so it also accepts a
// key under construction and a negatively instantiated one. The watch's
// lookup has no KEY_LOOKUP_PARTIAL: it waits for construction to end and
// fails with a negative key's error (wait_for_key_construction returns
// key_read_state: ENOKEY after KEYCTL_NEGATE, the given error after
// KEYCTL_REJECT), and with EIO for a key still uninstantiated.
// KEYCTL_READ's lookup (lookup_user_key(id, 0, KEY_DEFER_PERM_CHECK),
// then key_read_state) does the same before it checks Read, so a
// zero-length KEYCTL_READ completes the check: EACCES (not readable) or
// EOPNOTSUPP (a type without a read method) from it say the key is
// instantiated, which is all that is asked here.
func lookupView(serial int32) (Description, error) {
	d, err := describe(serial)
	if err != nil {
		return Description{}, err
	}
	if _, err := unix.KeyctlBuffer(unix.KEYCTL_READ, int(serial), nil, 0); err != nil &&
		!errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EOPNOTSUPP) {
		return Description{}, &Error{Op: "keyctl(KEYCTL_READ) instantiation check", Key: serial, Err: err}
	}
	return d, nil
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

// Resolve returns the serial of key id as Watch resolves it: a serial is
// returned as it is, a special id (SpecSession...) names a keyring of the
// calling thread, created if need be.
func Resolve(id int32) (int32, error) { return resolve(id) }
