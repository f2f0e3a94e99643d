package devtest

import (
	"path/filepath"
	"testing"
	"time"
)

// TestLockHostFuzzWorker: with the lock held (as a fuzz coordinator holds
// it from its TestMain), the lock of a fuzz worker returns at once, while
// anyone else still waits for it.
func TestLockHostFuzzWorker(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	release := lockHost(path, nil) // the coordinator's
	defer release()

	try := func(args ...string) bool {
		got := make(chan func(), 1)
		go func() { got <- lockHost(path, args) }()
		select {
		case r := <-got:
			r()
			return true
		case <-time.After(300 * time.Millisecond):
			go func() { (<-got)() }() // it gets the lock after release
			return false
		}
	}
	for _, args := range [][]string{
		{"-test.fuzzworker", "-test.paniconexit0", "-test.run=^$", "-test.fuzz=^FuzzParse$"},
		{"--test.fuzzworker=true"},
	} {
		if !try(args...) {
			t.Errorf("lock of a fuzz worker %q waited for the held lock", args)
		}
	}
	if try("-test.run=^TestX$", "-test.fuzz=^FuzzParse$") {
		t.Error("lock of the fuzz coordinator did not wait for the held lock")
	}
	if try("-test.run=x", "--", "-test.fuzzworker") {
		t.Error("-test.fuzzworker after -- taken for the flag")
	}
}
