// Command flow shows records flowing through the watchq engine: two queues
// watch one object with different tags and filters, a source posts key
// records into its watch list, one queue overflows and reports its loss
// in-band, and the object's destruction sends each watcher a removal
// record. Output is in the kernel sample's format.
package main

import (
	"fmt"
	"os"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/printer"
	"github.com/watchq/watchq/record"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flow:", err)
		os.Exit(1)
	}
}

func run() error {
	eng := watchq.NewEngine(watchq.Config{})
	const keyring = 0x2ffc2e5d
	wl := eng.NewWatchList(watchq.Object{Kind: watchq.KindKey})

	// Queue A: 32 notes, every key record, tag 1.
	a := watchq.NewQueue()
	if _, err := a.SetSize(32); err != nil {
		return err
	}
	// Queue B: only LINKED records, tag 2.
	b := watchq.NewQueue()
	if _, err := b.SetSize(32); err != nil {
		return err
	}
	f, err := record.NewFilter(record.FilterEntry{Type: record.TypeKey, Subtypes: record.SubtypeSet(record.KeyLinked)})
	if err != nil {
		return err
	}
	if err := b.SetFilter(f); err != nil {
		return err
	}
	me := watchq.CurrentCred()
	if err := wl.Add(a, keyring, 1, me); err != nil {
		return err
	}
	if err := wl.Add(b, keyring, 2, me); err != nil {
		return err
	}

	var buf [record.NoteSize]byte
	post := func(subtype uint8, aux uint32) {
		rec, _ := record.KeyNotification{Subtype: subtype, KeyID: keyring, Aux: aux}.AppendBinary(buf[:0])
		wl.Post(rec, watchq.SystemCred, keyring)
	}
	post(record.KeyLinked, 1035096409)
	post(record.KeyUpdated, 0)
	for i := range 40 { // queue A fills up: the rest, and its removal record, are lost
		post(record.KeySetattr, uint32(i))
	}
	wl.Destroy()

	p := printer.New(os.Stdout, printer.Options{Format: printer.FormatSample})
	rd := make([]byte, 433) // the sample's odd read size
	for _, q := range []struct {
		name string
		q    *watchq.Queue
	}{{"queue A (all key records, tag 1)", a}, {"queue B (LINKED only, tag 2)", b}} {
		fmt.Printf("== %s\n", q.name)
		for {
			n, err := q.q.TryRead(rd)
			if err == watchq.ErrWouldBlock {
				break
			}
			if err != nil {
				return err
			}
			if err := p.Read(rd[:n]); err != nil {
				return err
			}
		}
		s := q.q.Stats()
		fmt.Printf("== posted=%d delivered=%d lost=%d filtered=%d\n", s.Posted, s.Delivered, s.Lost, s.Filtered)
	}
	return nil
}
