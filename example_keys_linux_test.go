package watchq_test

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"github.com/watchq/watchq/source/keys"
)

// A first program, the one the package doc shows: watch a keyring and
// print what happens to it. keys.Open picks the kernel's notification
// pipe where the kernel has one, else a backend that follows the key
// system calls or /proc/keys; the records are the kernel's either way.
// (The keyring is new, in this process's keyring, so that nothing but the
// example changes it. Its owner gets every permission: a Go program's
// goroutines move between threads, and a keyring linked from one thread's
// keyrings is possessed on that thread alone.)
func Example_keyWatcher() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ring, _ := unix.AddKey("keyring", "watchq-example", nil, unix.KEY_SPEC_PROCESS_KEYRING)
	unix.KeyctlSetperm(ring, 0x3f3f0000) // possessor and owner: all

	eng := watchq.NewEngine(watchq.Config{})
	src, err := keys.Open(ctx, keys.Config{Engine: eng})
	if err != nil {
		panic(err)
	}
	defer src.Close()
	q := watchq.NewQueue()
	q.SetSize(32) // 32 notes; a queue holds nothing until sized, as a notification pipe
	src.Watch(q, int32(ring), 1, nil)

	unix.AddKey("user", "greeting", []byte("hello"), ring) // the change to see
	rec, err := q.Next(ctx)
	if err != nil {
		panic(err)
	}
	k, _ := rec.Key()
	fmt.Println(record.EventName(rec.Type(), rec.Subtype()), "tag", rec.Tag(), "aux is the new key:", k.KeyID == uint32(ring) && k.Aux > 0)
	// Output:
	// linked tag 1 aux is the new key: true
}
