package record

import (
	"errors"
	"syscall"
	"testing"
)

func TestParseTagArg(t *testing.T) {
	for _, n := range []int64{-2, -100, 256, 1 << 40} {
		if _, _, err := ParseTagArg(n); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("ParseTagArg(%d) = %v, want EINVAL", n, err)
		}
	}
	if _, remove, err := ParseTagArg(RemoveWatch); err != nil || !remove {
		t.Errorf("ParseTagArg(-1) = remove %v, %v", remove, err)
	}
	for _, n := range []int64{0, 1, 255} {
		tag, remove, err := ParseTagArg(n)
		if err != nil || remove || int64(tag) != n || int64(TagArg(tag)) != n {
			t.Errorf("ParseTagArg(%d) = %d, %v, %v", n, tag, remove, err)
		}
	}
}
