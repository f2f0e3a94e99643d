package keys

import (
	"encoding/binary"
	"testing"

	"github.com/watchq/watchq/record"
)

func TestParseDescription(t *testing.T) {
	d, err := ParseDescription("user;0;-1;3f010000;foo;bar")
	if err != nil {
		t.Fatal(err)
	}
	if d != (Description{Type: "user", UID: 0, GID: 0xffffffff, Perm: 0x3f010000, Description: "foo;bar"}) {
		t.Errorf("got %+v", d)
	}
	if d.Mode() != 0o400 {
		t.Errorf("Mode() = %#o, want 0o400", d.Mode())
	}
	if m := (Description{Perm: 0x3f000000}).Mode(); m != 0o1000 {
		t.Errorf("possessor-only Mode() = %#o, want 0o1000", m)
	}
	for _, bad := range []string{"", "user;0;0;3f010000", "user;x;0;0;d", ";0;0;0;d", "user;0;0;zz;d"} {
		if _, err := ParseDescription(bad); err == nil {
			t.Errorf("ParseDescription(%q) succeeded", bad)
		}
	}
}

func TestParseProcKeysLine(t *testing.T) {
	k, err := parseProcKeysLine([]byte("1b55ac1b IR-Q---     2 expd 3f000000     0 65534 user      foo: 3"))
	if err != nil {
		t.Fatal(err)
	}
	want := procKey{Serial: 0x1b55ac1b, Flags: "IR-Q---", Timeout: "expd", Perm: 0x3f000000, UID: 0, GID: 65534, Type: "user", Desc: "foo: 3"}
	if k != want {
		t.Errorf("got %+v, want %+v", k, want)
	}
	if !k.flag('R') || k.flag('i') {
		t.Error("flags")
	}
	for _, bad := range []string{"", "1b55ac1b", "zz I------ 1 perm 0 0 0 user", "1b55ac1b I------ 1 9x 3f000000 0 0 user", "00000000 I------ 1 perm 0 0 0 user"} {
		if _, err := parseProcKeysLine([]byte(bad)); err == nil {
			t.Errorf("parseProcKeysLine(%q) succeeded", bad)
		}
	}
}

func TestParseTimeout(t *testing.T) {
	for s, want := range map[string][2]int64{"perm": {0, 0}, "expd": {-1, -1}, "59s": {59, 1}, "5m": {5, 60}, "2h": {2, 3600}, "3d": {3, 86400}, "1w": {1, 604800}} {
		v, u, err := parseTimeout(s)
		if err != nil || v != want[0] || u != want[1] {
			t.Errorf("parseTimeout(%q) = %d, %d, %v", s, v, u, err)
		}
	}
}

func TestParseKeyring(t *testing.T) {
	b := binary.NativeEndian.AppendUint32(nil, 7)
	b = binary.NativeEndian.AppendUint32(b, 9)
	got, err := parseKeyring(b, nil)
	if err != nil || len(got) != 2 || got[0] != 7 || got[1] != 9 {
		t.Errorf("parseKeyring = %v, %v", got, err)
	}
	if _, err := parseKeyring(b[:5], nil); err == nil {
		t.Error("partial serial accepted")
	}
}

// TestDiff checks the poll backend's inference rules one by one: the
// fidelity table of docs/keys.md.
func TestDiff(t *testing.T) {
	live := func(f func(*snapshot)) *snapshot {
		s := &snapshot{perm: 0x3f010000, noExpiry: true, membersOK: true, payloadOK: true, payload: 1, desc: "d: 1"}
		if f != nil {
			f(s)
		}
		return s
	}
	k := func(sub uint8, aux uint32) record.KeyNotification {
		return record.KeyNotification{Subtype: sub, KeyID: 5, Aux: aux}
	}
	for _, tc := range []struct {
		name     string
		old, cur *snapshot
		want     []record.KeyNotification
		gone     bool
	}{
		{"nothing", live(nil), live(nil), nil, false},
		{"payload", live(nil), live(func(s *snapshot) { s.payload = 2 }), []record.KeyNotification{k(record.KeyUpdated, 0)}, false},
		{"desc (unreadable)", live(func(s *snapshot) { s.payloadOK = false }), live(func(s *snapshot) { s.payloadOK = false; s.desc = "d: 2" }), []record.KeyNotification{k(record.KeyUpdated, 0)}, false},
		{"link", live(func(s *snapshot) { s.keyring = true }), live(func(s *snapshot) { s.keyring = true; s.members = []int32{8} }), []record.KeyNotification{k(record.KeyLinked, 8)}, false},
		{"unlink one to empty", live(func(s *snapshot) { s.keyring = true; s.members = []int32{8} }), live(func(s *snapshot) { s.keyring = true }), []record.KeyNotification{k(record.KeyUnlinked, 8)}, false},
		{"clear", live(func(s *snapshot) { s.keyring = true; s.members = []int32{8, 9} }), live(func(s *snapshot) { s.keyring = true }), []record.KeyNotification{k(record.KeyCleared, 0)}, false},
		{"unreadable keyring", live(func(s *snapshot) { s.keyring = true; s.members = []int32{8, 9} }), live(func(s *snapshot) { s.keyring = true; s.membersOK = false }), nil, false},
		{"perm", live(nil), live(func(s *snapshot) { s.perm = 0x3f3f0000 }), []record.KeyNotification{k(record.KeySetattr, 0)}, false},
		{"timeout set", live(nil), live(func(s *snapshot) { s.noExpiry = false; s.expLo, s.expHi = 100, 200 }), []record.KeyNotification{k(record.KeySetattr, 0)}, false},
		{"timeout same", live(func(s *snapshot) { s.noExpiry = false; s.expLo, s.expHi = 100, 200 }), live(func(s *snapshot) { s.noExpiry = false; s.expLo, s.expHi = 150, 260 }), nil, false},
		{"timeout moved", live(func(s *snapshot) { s.noExpiry = false; s.expLo, s.expHi = 100, 200 }), live(func(s *snapshot) { s.noExpiry = false; s.expLo, s.expHi = 300, 360 }), []record.KeyNotification{k(record.KeySetattr, 0)}, false},
		{"revoke (expiry moves too)", live(nil), live(func(s *snapshot) { s.state = stateRevoked; s.noExpiry = false }), []record.KeyNotification{k(record.KeyRevoked, 0)}, false},
		{"invalidate seen", live(nil), live(func(s *snapshot) { s.state = stateInvalidated }), []record.KeyNotification{k(record.KeyInvalidated, 0)}, false},
		{"expired", live(nil), live(func(s *snapshot) { s.state = stateExpired; s.noExpiry = false }), nil, false},
		{"hidden", live(nil), live(func(s *snapshot) { s.state = stateHidden; s.perm = 0 }), nil, false},
		{"gone", live(nil), &snapshot{state: stateGone}, nil, true},
	} {
		got, _, gone := diff(5, tc.old, tc.cur, nil)
		if gone != tc.gone || len(got) != len(tc.want) {
			t.Errorf("%s: diff = %v, gone %v; want %v, gone %v", tc.name, got, gone, tc.want, tc.gone)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: record %d = %+v, want %+v", tc.name, i, got[i], tc.want[i])
			}
		}
	}
}

func FuzzParseProcKeysLine(f *testing.F) {
	f.Add([]byte("1b55ac1b IR-Q---     2 expd 3f000000     0 65534 user      foo: 3"))
	f.Add([]byte("0a9a700b I------     1 perm 0f0b0000     0     0 keyring   .blacklist: empty"))
	f.Add([]byte("2433b83b I--Q---     1   5m 0c030000     0 65534 keyring   .user_reg: 2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := parseProcKeysLine(b)
		if err != nil {
			return
		}
		if k.Serial <= 0 || len(k.Flags) != 7 {
			t.Fatalf("accepted %q as %+v", b, k)
		}
		if _, _, err := parseTimeout(k.Timeout); err != nil {
			t.Fatalf("accepted bad timeout in %q", b)
		}
	})
}

func FuzzParseDescription(f *testing.F) {
	f.Add("user;0;0;3f010000;foo")
	f.Add("keyring;1000;-1;3f0b0000;_ses")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDescription(s)
		if err == nil && d.Type == "" {
			t.Fatalf("accepted %q with no type", s)
		}
	})
}

func FuzzParseKeyring(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseKeyring(b, nil)
		if err == nil && len(m)*4 != len(b) {
			t.Fatalf("%d serials from %d bytes", len(m), len(b))
		}
	})
}
