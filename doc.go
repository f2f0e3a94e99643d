// Package watchq is the general notification queue engine: Linux's
// watch_queue (kernel/watch_queue.c, fs/pipe.c) rebuilt in Go with the
// kernel's semantics and record bytes.
//
// Event sources post small, typed, binary records (at most 127 bytes, the
// layout of struct watch_notification; package [record] has the format) to
// a [WatchList] that belongs to the watched object. Every watch on that
// object ([WatchList.Add]) receives its own copy, stamped with the watch's
// tag (0..255), checked against its queue's [record.Filter] and the
// [Policy], and copied into the watcher's bounded [Queue].
//
// # A first program
//
// Watch a keyring and print what happens to it (Example_keyWatcher runs
// this): an engine, a key source on it (package source/keys: the kernel's
// notification pipe where the kernel has one, else a backend that follows
// the key system calls or /proc/keys), a queue sized like a notification
// pipe, one watch with tag 1, and a loop over the records.
//
//	eng := watchq.NewEngine(watchq.Config{})
//	src, err := keys.Open(ctx, keys.Config{Engine: eng})
//	if err != nil {
//		return err
//	}
//	defer src.Close()
//	q := watchq.NewQueue()
//	q.SetSize(32) // nothing is kept until the queue is sized, as in the kernel
//	src.Watch(q, keys.SpecSession, 1, nil)
//	for rec, err := range q.Records(ctx) {
//		fmt.Println(rec, err) // or printer.Line; rec.Key() decodes it
//	}
//
// A device watcher is the same with package source/device (device.Open, Watch) in
// process as root, or through watchqd with package client, whose doc shows
// it; records, filters and errors are the same either way.
//
// # Who blocks and who drops
//
// Posting never blocks and never allocates. A queue holds a fixed number of
// notes, set once with [Queue.SetSize]. When it is full the newest queued
// record is flagged and the new record is dropped; the reader then gets
// exactly one 8-byte loss record right after the flagged record, carrying the
// number of records lost (saturating at 0xffff) in its type-info bits.
// Consumers size their queue; producers are never slowed by them.
//
// # Reading
//
// [Queue.Read] packs whole records into a buffer exactly like read(2) on a
// notification pipe; [Queue.Next] returns one [record.Record];
// [Queue.Records] is an iterator. A buffer too small for the next record is
// [ErrBufferTooSmall] (ENOBUFS under errors.Is). A [ReadySet] lets one
// goroutine wait for many queues.
//
// docs/design.md's Engine section maps each piece to the kernel code it
// mirrors and lists where watchq differs on purpose.
package watchq
