package keys

import (
	"slices"

	"github.com/watchq/watchq/record"
)

// keyState is what a poll learns about a key's life.
type keyState uint8

const (
	stateLive        keyState = iota // instantiated, usable
	stateRevoked                     // /proc/keys R, or EKEYREVOKED
	stateInvalidated                 // /proc/keys i (seldom seen: the gc is quick)
	stateExpired                     // /proc/keys "expd", or EKEYEXPIRED
	stateHidden                      // exists but this process may no longer view it
	stateGone                        // ENOKEY: collected
)

// snapshot is what the poll backend remembers about one watched key
// between intervals. It never holds payload bytes, only a keyed hash.
type snapshot struct {
	state    keyState
	uid, gid uint32
	perm     uint32
	// Expiry: noExpiry for "perm"; otherwise the absolute expiry lies in
	// [expLo, expHi) Unix seconds, as narrow as the /proc/keys resolution
	// and the readings so far allow.
	noExpiry     bool
	expLo, expHi int64

	keyring   bool
	membersOK bool    // members was read (the keyring is readable)
	members   []int32 // keyring contents, in kernel order

	payloadOK bool   // payload was read (the key is readable)
	payload   uint64 // maphash of the payload
	desc      string // the type's /proc/keys description ("foo: 3"), non-keyrings
}

// setExpiry records the timeout column read between Unix times t0 and t1.
func (s *snapshot) setExpiry(v, unit, t0, t1 int64) {
	switch {
	case unit == 0:
		s.noExpiry = true
	case unit < 0:
		if s.state == stateLive {
			s.state = stateExpired
		}
		s.expLo, s.expHi = 0, t1+1
	default:
		s.expLo = t0 + v*unit - 1
		s.expHi = t1 + (v+1)*unit + 1
	}
}

// expiryMoved reports whether old and cur cannot describe the same expiry
// time.
func expiryMoved(old, cur *snapshot) bool {
	if old.noExpiry != cur.noExpiry {
		return true
	}
	if old.noExpiry {
		return false
	}
	return cur.expLo >= old.expHi || old.expLo >= cur.expHi
}

// diff compares the previous snapshot of key serial with the current one,
// appends the records the kernel would have posted for the change (as far as
// a poll can tell; see docs/keys.md), and returns the snapshot to remember
// and whether the key is gone. Records are in the order UPDATED, UNLINKED or
// CLEARED, LINKED, SETATTR, REVOKED, INVALIDATED.
func diff(serial int32, old, cur *snapshot, out []record.KeyNotification) ([]record.KeyNotification, *snapshot, bool) {
	rec := func(sub uint8, aux uint32) {
		out = append(out, record.KeyNotification{Subtype: sub, KeyID: uint32(serial), Aux: aux})
	}
	switch cur.state {
	case stateGone:
		return out, cur, true
	case stateHidden:
		// The key exists but we lost View: a kernel watch keeps
		// delivering, a poll sees nothing. Keep the old picture.
		return out, old, false
	}
	bothLive := old.state == stateLive && cur.state == stateLive
	if bothLive && !cur.keyring {
		if (old.payloadOK && cur.payloadOK && old.payload != cur.payload) || old.desc != cur.desc {
			rec(record.KeyUpdated, 0)
		}
	}
	if bothLive && old.membersOK && cur.membersOK {
		var gone int
		for _, m := range old.members {
			if !slices.Contains(cur.members, m) {
				gone++
			}
		}
		if gone >= 2 && len(cur.members) == 0 {
			rec(record.KeyCleared, 0)
		} else {
			for _, m := range old.members {
				if !slices.Contains(cur.members, m) {
					rec(record.KeyUnlinked, uint32(m))
				}
			}
		}
		for _, m := range cur.members {
			if !slices.Contains(old.members, m) {
				rec(record.KeyLinked, uint32(m))
			}
		}
	}
	switch {
	case !cur.membersOK:
		cur.members, cur.membersOK = old.members, old.membersOK
	case slices.Equal(old.members, cur.members):
		cur.members = old.members // the caller reuses cur's buffer
	default:
		cur.members = slices.Clone(cur.members)
	}
	if !cur.payloadOK {
		cur.payload, cur.payloadOK = old.payload, old.payloadOK
	}
	if bothLive {
		if old.uid != cur.uid || old.gid != cur.gid || old.perm != cur.perm || expiryMoved(old, cur) {
			rec(record.KeySetattr, 0)
		} else if !cur.noExpiry {
			// Same expiry: keep the narrower window.
			cur.expLo, cur.expHi = max(old.expLo, cur.expLo), min(old.expHi, cur.expHi)
		}
	}
	if cur.state == stateRevoked && old.state != stateRevoked {
		rec(record.KeyRevoked, 0)
	}
	if cur.state == stateInvalidated && old.state != stateInvalidated {
		rec(record.KeyInvalidated, 0)
	}
	return out, cur, false
}
