// Package keytrace traces the key operations of every process on a kernel
// without CONFIG_KEY_NOTIFICATIONS and turns each into the records the
// kernel's notify_key calls would have posted.
//
// The BPF side (program.go) sits on the syscall tracepoints
// syscalls:sys_enter_keyctl/add_key/request_key and their sys_exit twins,
// the only hooks the development machines' kernel allows (it refuses
// fentry/fexit programs): a mutating call is remembered per thread at entry
// and reported at exit with its return value, so a failed call reports
// nothing. At exit the program also reads the caller's own credentials
// (task->cred, BTF offsets from /sys/kernel/btf/vmlinux): the serials of its
// thread, process and session keyrings and request_key authorisation key as
// the call left them (a lookup with KEY_LOOKUP_CREATE installs a missing
// one), the uid whose user keyrings @u and @us name, and its user
// namespace; KEYCTL_INSTANTIATE and friends also note at entry the
// requestor's destination keyring. So special ids resolve in the caller's
// context, exactly as lookup_user_key resolved them.
//
// Records derives the kernel's records from one event; the table it follows
// is in docs/keys.md.
package keytrace

import (
	"encoding/binary"
	"fmt"

	"github.com/watchq/watchq/record"
)

// Event kinds.
const (
	KindSyscall = 1 // a traced system call returned
	KindMarker  = 3 // a Marker call (Tracer.Marker): all before it was read
)

// System calls, Event.Nr.
const (
	NrKeyctl     = 0
	NrAddKey     = 1
	NrRequestKey = 2
)

// keyctl(2) operations that change keys (<linux/keyctl.h>). The BPF side
// remembers only these.
const (
	opUpdate          = 2
	opRevoke          = 3
	opChown           = 4
	opSetperm         = 5
	opClear           = 7
	opLink            = 8
	opUnlink          = 9
	opSearch          = 10
	opInstantiate     = 12
	opNegate          = 13
	opSetTimeout      = 15
	opReject          = 19
	opInstantiateIOV  = 20
	opInvalidate      = 21
	opGetPersistent   = 22
	opRestrictKeyring = 29
	opMove            = 30
)

// tracedOps are the keyctl operations the BPF side remembers.
var tracedOps = []int32{
	opUpdate, opRevoke, opChown, opSetperm, opClear, opLink, opUnlink, opSearch,
	opInstantiate, opNegate, opSetTimeout, opReject, opInstantiateIOV, opInvalidate,
	opGetPersistent, opRestrictKeyring, opMove,
}

// MarkerOption is the keyctl(2) operation Tracer.Marker calls: no kernel
// has it (keyctl fails with EOPNOTSUPP), and the sys_enter_keyctl program
// reports it at once with its cookie.
const MarkerOption = 0x77710001

// EventSize is the size of one ring-buffer event.
const EventSize = 112

// Offsets of the event's fields, shared by the BPF programs and Decode.
const (
	offKind    = 0
	offNr      = 4
	offOption  = 8
	offTGID    = 12
	offRet     = 16
	offArgs    = 24 // 4 × u64: keyctl's arg2..arg5; add_key's and request_key's keyring in Args[3]
	offRes     = 56 // 8 × s32: the serial special id -(i+1) resolves to
	offUID     = 88 // the caller's real uid (cred->user->uid): whose @u and @us
	offAuthKey = 92 // KEYCTL_INSTANTIATE & co.: the authorisation key at entry
	offUserNS  = 96 // the caller's cred->user_ns
	offDrops   = 104
)

// Event is one ring-buffer event.
type Event struct {
	Kind   uint32
	Nr     uint32
	Option uint32 // keyctl's operation
	TGID   uint32 // the calling process
	Ret    int64  // the return value (KindSyscall: never negative)
	// Args are keyctl's arg2..arg5. add_key and request_key put their
	// keyring argument in Args[3]. A marker's cookie is Args[0].
	Args [4]uint64
	// Res[i] is the serial special id -(i+1) resolves to for the caller,
	// 0 if it has none: @t, @p, @s and @a from its credentials at exit, the
	// requestor's keyring (-8) at entry; @u and @us (Res[3], Res[4]) are
	// left to the reader (see Resolver).
	Res     [8]int32
	UID     uint32 // the caller's real uid: whose user keyrings @u and @us are
	AuthKey int32  // instantiation calls: the caller's authorisation key at entry
	UserNS  uint64 // the caller's user namespace (an address, compared only)
	Drops   uint64 // events the ring had dropped when this one was written
}

// Decode decodes one ring-buffer event.
func Decode(b []byte, e *Event) error {
	if len(b) < EventSize {
		return fmt.Errorf("keytrace: %d-byte event, want %d", len(b), EventSize)
	}
	le := binary.NativeEndian
	e.Kind = le.Uint32(b[offKind:])
	e.Nr = le.Uint32(b[offNr:])
	e.Option = le.Uint32(b[offOption:])
	e.TGID = le.Uint32(b[offTGID:])
	e.Ret = int64(le.Uint64(b[offRet:]))
	for i := range e.Args {
		e.Args[i] = le.Uint64(b[offArgs+8*i:])
	}
	for i := range e.Res {
		e.Res[i] = int32(le.Uint32(b[offRes+4*i:]))
	}
	e.UID = le.Uint32(b[offUID:])
	e.AuthKey = int32(le.Uint32(b[offAuthKey:]))
	e.UserNS = le.Uint64(b[offUserNS:])
	e.Drops = le.Uint64(b[offDrops:])
	if e.Kind < KindSyscall || e.Kind > KindMarker {
		return fmt.Errorf("keytrace: event kind %d", e.Kind)
	}
	return nil
}

// Encode is Decode's inverse, for tests.
func (e *Event) Encode() []byte {
	b := make([]byte, EventSize)
	le := binary.NativeEndian
	le.PutUint32(b[offKind:], e.Kind)
	le.PutUint32(b[offNr:], e.Nr)
	le.PutUint32(b[offOption:], e.Option)
	le.PutUint32(b[offTGID:], e.TGID)
	le.PutUint64(b[offRet:], uint64(e.Ret))
	for i, a := range e.Args {
		le.PutUint64(b[offArgs+8*i:], a)
	}
	for i, r := range e.Res {
		le.PutUint32(b[offRes+4*i:], uint32(r))
	}
	le.PutUint32(b[offUID:], e.UID)
	le.PutUint32(b[offAuthKey:], uint32(e.AuthKey))
	le.PutUint64(b[offUserNS:], e.UserNS)
	le.PutUint64(b[offDrops:], e.Drops)
	return b
}

// negENOKEY is -ENOKEY as an aux field.
const negENOKEY = ^uint32(126) + 1

// Cookie is a marker event's cookie.
func (e *Event) Cookie() uint64 { return e.Args[0] }

// Resolver answers what an event cannot: the reader's knowledge.
type Resolver interface {
	// UserKeyring returns the serial of uid's user keyring (@u), or with
	// session its user session keyring (@us), in the user namespace
	// userns; 0 if it cannot tell.
	UserKeyring(uid uint32, session bool, userns uint64) int32
	// Existed reports whether key is known to have existed before the
	// call: add_key returned an existing key it updated, not a new one.
	// known is false where the reader cannot tell.
	Existed(key, ring int32) (existed, known bool)
}

// serial resolves key id argument a (a key_serial_t in an unsigned long) as
// the call did: a serial is itself, a special id the caller's keyring. 0
// means unknown.
func (e *Event) serial(a uint64, r Resolver) int32 {
	id := int32(uint32(a))
	switch {
	case id > 0:
		return id
	case id == -4 || id == -5:
		if r == nil {
			return 0
		}
		return r.UserKeyring(e.UID, id == -5, e.UserNS)
	case id < 0 && id >= -int32(len(e.Res)):
		return e.Res[-id-1]
	}
	return 0
}

// instantiationRing is the keyring KEYCTL_INSTANTIATE & co. link into:
// get_instantiation_keyring's answer.
func (e *Event) instantiationRing(a uint64) int32 {
	switch id := int32(uint32(a)); {
	case id > 0:
		return id
	case id == -7 || id == 0:
		return 0
	case id >= -8:
		return e.Res[7] // any special id: the requestor's destination
	}
	return 0
}

// Records appends the records the kernel posts for the change e reports, in
// the kernel's order (security/keys/*.c, the notify_key calls):
//
//	KEYCTL_UPDATE                      UPDATED on the key (key_update)
//	KEYCTL_REVOKE                      REVOKED (key_revoke; a revoked key fails the lookup)
//	KEYCTL_CHOWN, SETPERM, SET_TIMEOUT,
//	RESTRICT_KEYRING                   SETATTR
//	KEYCTL_CLEAR                       CLEARED on the keyring (keyring_clear)
//	KEYCTL_LINK                        LINKED on the keyring, aux the key (key_link, also re-linking)
//	KEYCTL_UNLINK                      UNLINKED on the keyring (key_unlink)
//	KEYCTL_MOVE                        UNLINKED on from, LINKED on to (key_move); nothing if from == to
//	KEYCTL_INVALIDATE                  INVALIDATED (key_invalidate; an invalidated key fails the lookup)
//	KEYCTL_SEARCH with a destination   LINKED on it (key_link of the key found)
//	KEYCTL_GET_PERSISTENT              LINKED on the destination
//	KEYCTL_INSTANTIATE(_IOV), NEGATE,
//	REJECT                             INSTANTIATED (aux 0 or -error), LINKED on the
//	                                   destination, INVALIDATED on the authorisation key
//	add_key                            an existing key (it must have been in the keyring):
//	                                   UPDATED on it (__key_update); a new key: LINKED
//	                                   on the keyring (__key_instantiate_and_link)
//	request_key with a destination     LINKED on it (key_link of the key found, or
//	                                   construct_alloc_key's link of the new key)
//
// r may be nil: then @u and @us resolve to nothing and add_key counts as
// creating.
func (e *Event) Records(r Resolver, out []record.KeyNotification) []record.KeyNotification {
	rec := func(sub uint8, key int32, aux uint32) {
		if key > 0 {
			out = append(out, record.KeyNotification{Subtype: sub, KeyID: uint32(key), Aux: aux})
		}
	}
	if e.Kind != KindSyscall || e.Ret < 0 {
		return out
	}
	a := e.Args
	switch e.Nr {
	case NrAddKey:
		key, ring := int32(e.Ret), e.serial(a[3], r)
		existed := false
		if r != nil {
			existed, _ = r.Existed(key, ring)
		}
		if existed {
			rec(record.KeyUpdated, key, 0)
		} else {
			rec(record.KeyLinked, ring, uint32(key))
		}
		return out
	case NrRequestKey:
		if int32(uint32(a[3])) != 0 && e.Ret > 0 {
			rec(record.KeyLinked, e.serial(a[3], r), uint32(e.Ret))
		}
		return out
	case NrKeyctl:
	default:
		return out
	}
	switch e.Option {
	case opUpdate:
		rec(record.KeyUpdated, e.serial(a[0], r), 0)
	case opRevoke:
		rec(record.KeyRevoked, e.serial(a[0], r), 0)
	case opChown, opSetperm, opSetTimeout, opRestrictKeyring:
		rec(record.KeySetattr, e.serial(a[0], r), 0)
	case opClear:
		rec(record.KeyCleared, e.serial(a[0], r), 0)
	case opLink:
		if k := e.serial(a[0], r); k > 0 {
			rec(record.KeyLinked, e.serial(a[1], r), uint32(k))
		}
	case opUnlink:
		if k := e.serial(a[0], r); k > 0 {
			rec(record.KeyUnlinked, e.serial(a[1], r), uint32(k))
		}
	case opMove:
		k, from, to := e.serial(a[0], r), e.serial(a[1], r), e.serial(a[2], r)
		if k > 0 && from != to {
			rec(record.KeyUnlinked, from, uint32(k))
			rec(record.KeyLinked, to, uint32(k))
		}
	case opInvalidate:
		rec(record.KeyInvalidated, e.serial(a[0], r), 0)
	case opSearch:
		if int32(uint32(a[3])) != 0 && e.Ret > 0 {
			rec(record.KeyLinked, e.serial(a[3], r), uint32(e.Ret))
		}
	case opGetPersistent:
		if int32(uint32(a[1])) != 0 && e.Ret > 0 {
			rec(record.KeyLinked, e.serial(a[1], r), uint32(e.Ret))
		}
	case opInstantiate, opInstantiateIOV, opNegate, opReject:
		key := int32(uint32(a[0]))
		var aux uint32
		ring := e.instantiationRing(a[2])
		switch e.Option {
		case opNegate:
			aux = negENOKEY // keyctl_negate_key rejects with ENOKEY
		case opReject:
			aux = ^uint32(a[2]) + 1 // -error
			ring = e.instantiationRing(a[3])
		case opInstantiate, opInstantiateIOV:
			ring = e.instantiationRing(a[3])
		}
		rec(record.KeyInstantiated, key, aux)
		if key > 0 {
			rec(record.KeyLinked, ring, uint32(key))
		}
		rec(record.KeyInvalidated, e.AuthKey, 0)
	}
	return out
}
