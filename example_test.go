package watchq_test

import (
	"context"
	"fmt"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/printer"
	"github.com/watchq/watchq/record"
)

// A source posts into an object's watch list; every queue watching the
// object gets its own copy, stamped with its own tag.
func ExampleWatchList_Post() {
	eng := watchq.NewEngine(watchq.Config{})
	keys := eng.NewWatchList(watchq.Object{Kind: watchq.KindKey})

	q := watchq.NewQueue()
	if _, err := q.SetSize(32); err != nil {
		panic(err)
	}
	if err := keys.Add(q, 0x2ffc2e5d, 1, watchq.CurrentCred()); err != nil {
		panic(err)
	}

	var buf [record.NoteSize]byte
	rec, _ := record.KeyNotification{Subtype: record.KeyLinked, KeyID: 0x2ffc2e5d, Aux: 1035096409}.AppendBinary(buf[:0])
	keys.Post(rec, watchq.SystemCred, 0x2ffc2e5d)

	r, err := q.Next(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println(r)
	fmt.Println(printer.Sample(r))
	// Output:
	// ty=000001 sy=02 i=00000110
	// KEY 2ffc2e5d change=2[linked] aux=1035096409
}

// A full queue never blocks the poster: it drops the record and tells the
// reader, in order, with one loss record carrying the count.
func ExampleQueue_Read() {
	eng := watchq.NewEngine(watchq.Config{})
	devs := eng.NewWatchList(watchq.Object{Kind: watchq.KindDevices})
	q := watchq.NewQueue()
	capacity, _ := q.SetSize(1) // rounded up to a page of 32 notes
	_ = devs.Add(q, 0, 4, watchq.CurrentCred())

	var buf [record.NoteSize]byte
	for range 40 {
		rec, _ := record.USBNotification{Subtype: record.USBDeviceAdd, Name: "1-1"}.AppendBinary(buf[:0])
		devs.Post(rec, watchq.SystemCred, 0)
	}

	rd := make([]byte, 4096)
	n, _ := q.Read(context.Background(), rd)
	records := 0
	for r := range record.Records(rd[:n]) {
		if r.IsLoss() {
			l, _ := r.Loss()
			fmt.Printf("capacity %d: %d records, then a loss record: %d lost\n", capacity, records, l.Count)
			continue
		}
		records++
	}
	// Output:
	// capacity 32: 32 records, then a loss record: 8 lost
}

// ParseFilter validates the kernel's binary struct
// watch_notification_filter exactly as IOC_WATCH_QUEUE_SET_FILTER does.
func ExampleParseFilter() {
	f, _ := record.NewFilter(record.FilterEntry{
		Type:     record.TypeBlock,
		Subtypes: record.SubtypeSet(record.BlockErrorIO, record.BlockAdd), // 10 and 0x80: all 256 subtypes work
	})
	raw, _ := f.MarshalBinary()
	g, err := record.ParseFilter(raw)
	fmt.Println(len(raw), err, g.Match(record.TypeBlock, record.BlockAdd, 29))

	_, err = record.NewFilter(record.FilterEntry{Type: record.TypeKey, InfoMask: record.InfoLength})
	fmt.Println(err)
	// Output:
	// 52 <nil> true
	// watchq: filter entry 0: info_mask 0x7f covers the length bits
}
