//go:build linux

package mount

import "testing"

func TestParseFanEvents(t *testing.T) {
	ev := func(mask uint64, info ...[]byte) []byte {
		b := make([]byte, 24)
		n := 24
		for _, i := range info {
			n += len(i)
		}
		le32 := func(o int, v uint32) { b[o], b[o+1], b[o+2], b[o+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24) }
		le32(0, uint32(n))
		b[4] = fanMetadataVersion
		b[6] = 24
		for i := range 8 {
			b[8+i] = byte(mask >> (8 * i))
		}
		le32(16, 0xffffffff) // FAN_NOFD
		for _, i := range info {
			b = append(b, i...)
		}
		return b
	}
	mnt := []byte{7, 0, 16, 0, 0, 0, 0, 0, 0x57, 0x04, 0, 0x80, 0, 0, 0, 0}
	errInfo := []byte{5, 0, 12, 0, 5, 0, 0, 0, 3, 0, 0, 0}
	fid := []byte{1, 0, 20, 0, 1, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0}
	buf := append(ev(0x1000000, mnt), ev(0x8000, errInfo, fid)...)
	buf = append(buf, 1, 2, 3) // a torn tail is ignored
	var got []fanEvent
	parseFanEvents(buf, func(e fanEvent) { got = append(got, e) })
	if len(got) != 2 || got[0].mntID != 0x80000457 || !got[0].hasMnt || got[0].mask != 0x1000000 ||
		got[1].errno != 5 || got[1].errCount != 3 || got[1].fsid != [2]int32{1, 2} || !got[1].hasErr || !got[1].hasFSID {
		t.Errorf("got %+v", got)
	}
}
