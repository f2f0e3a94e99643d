//go:build linux

package keys

import (
	"context"
	"errors"
	"hash/maphash"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/watchq/watchq/record"
)

// procKeysPath is where security/keys/proc.c lists the keys the caller may
// view.
var procKeysPath = "/proc/keys"

// poller is the poll backend: every interval, one pass over the watched
// keys diffs what the kernel shows now against what it showed before.
type poller struct {
	s    *Source
	kick chan chan struct{} // Sync requests; the loop answers by closing

	// scanMu serialises passes; it guards sc, list, out and the
	// next/scratch fields of the entries being scanned. Lock order:
	// scanMu, then Source.mu.
	scanMu sync.Mutex
	sc     scanner
	list   []*entry                 // entries being scanned
	out    []record.KeyNotification // records of one key's diff
}

// scanner holds one scan's buffers.
type scanner struct {
	seed    maphash.Seed     // payload hashes are keyed per process
	byID    map[int32]*entry // list by serial
	found   map[int32]bool   // seen in /proc/keys this pass
	proc    []byte           // /proc/keys buffer
	payload []byte           // KEYCTL_READ buffer
}

func newScanner(seed maphash.Seed) scanner {
	return scanner{
		seed: seed, byID: make(map[int32]*entry), found: make(map[int32]bool),
		proc: make([]byte, 0, 16<<10), payload: make([]byte, 0, 512),
	}
}

func newPoller(s *Source) *poller {
	return &poller{s: s, kick: make(chan chan struct{}), sc: newScanner(maphash.MakeSeed())}
}

// add takes the key's first picture with a scanner of its own (it runs
// under Source.mu, so it must not wait for scanMu); records start with the
// next pass. The new entry is in no pass's list until add returns.
func (p *poller) addLocked(e *entry) error {
	sc := newScanner(p.sc.seed)
	sc.scan([]*entry{e})
	e.snap = e.next
	e.snap.members = append([]int32(nil), e.next.members...)
	e.next = snapshot{}
	return nil
}

func (p *poller) removeLocked(*entry) {}

func (p *poller) run() { passLoop(p.s.stop, p.s.interval, p.kick, p.pass) }

func (p *poller) sync(ctx context.Context) error { return kickPass(ctx, p.s.stop, p.kick) }

func (p *poller) close() {}

// pass scans every watched key, then diffs and posts under Source.mu.
func (p *poller) pass() {
	s := p.s
	p.scanMu.Lock()
	defer p.scanMu.Unlock()
	s.mu.Lock()
	p.list = p.list[:0]
	for _, e := range s.entries {
		p.list = append(p.list, e)
	}
	s.mu.Unlock()
	if len(p.list) == 0 {
		return
	}
	p.sc.scan(p.list)

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range p.list {
		if e.dead {
			continue
		}
		if e.wl.Len() == 0 {
			s.dropLocked(e) // every queue watching it was closed
			continue
		}
		var snap *snapshot
		var gone bool
		p.out, snap, gone = diff(e.serial, &e.snap, &e.next, p.out[:0])
		for _, n := range p.out {
			s.postLocked(e, n)
		}
		if gone {
			s.destroyLocked(e)
			continue
		}
		if snap != &e.snap {
			e.snap, e.next = *snap, snapshot{}
		}
	}
}

// scan fills e.next for each entry from /proc/keys, KEYCTL_DESCRIBE and
// KEYCTL_READ. It runs without Source.mu: it makes system calls.
func (p *scanner) scan(list []*entry) {
	clear(p.byID)
	clear(p.found)
	for _, e := range list {
		p.byID[e.serial] = e
		e.next = snapshot{}
	}
	t0 := time.Now().Unix()
	err := p.readProcKeys()
	t1 := time.Now().Unix()
	if err == nil {
		p.parseProcKeys(t0, t1)
	}
	for _, e := range list {
		n := &e.next
		if !p.found[e.serial] {
			p.describeOnly(e)
		}
		if n.state != stateLive {
			continue
		}
		b, err := readKey(e.serial, p.payload)
		if cap(b) > cap(p.payload) {
			p.payload = b[:0]
		}
		if err != nil {
			continue // not readable: contents and payload unseen
		}
		if n.keyring {
			e.scratch, err = parseKeyring(b, e.scratch[:0])
			n.members, n.membersOK = e.scratch, err == nil
		} else {
			n.payload, n.payloadOK = maphash.Bytes(p.seed, b), true
		}
	}
}

// readProcKeys reads /proc/keys whole into p.proc.
func (p *scanner) readProcKeys() error {
	f, err := os.Open(procKeysPath)
	if err != nil {
		return err
	}
	defer f.Close()
	p.proc = p.proc[:0]
	for {
		if len(p.proc) == cap(p.proc) {
			p.proc = append(p.proc, 0)[:len(p.proc)]
		}
		n, err := f.Read(p.proc[len(p.proc):cap(p.proc)])
		p.proc = p.proc[:len(p.proc)+n]
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// parseProcKeys fills the snapshots of watched keys listed in p.proc.
func (p *scanner) parseProcKeys(t0, t1 int64) {
	b := p.proc
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		line := b[:i]
		if i < len(b) {
			i++
		}
		b = b[i:]
		if len(line) < 9 {
			continue
		}
		id, err := strconv.ParseUint(string(line[:8]), 16, 32)
		if err != nil {
			continue
		}
		e := p.byID[int32(id)]
		if e == nil {
			continue
		}
		k, err := parseProcKeysLine(line)
		if err != nil {
			continue
		}
		p.found[e.serial] = true
		n := &e.next
		n.uid, n.gid, n.perm = k.UID, k.GID, k.Perm
		n.keyring = k.Type == "keyring"
		if !n.keyring {
			n.desc = k.Desc
		}
		switch {
		case k.flag('D'):
			n.state = stateGone
		case k.flag('R'):
			n.state = stateRevoked
		case k.flag('i'):
			n.state = stateInvalidated
		case k.flag('U') || !k.flag('I'):
			n.state = stateHidden // under construction: nothing to say yet
		}
		v, unit, _ := parseTimeout(k.Timeout)
		n.setExpiry(v, unit, t0, t1)
	}
}

// describeOnly fills e.next for a key /proc/keys did not list: gone, no
// longer viewable, or /proc/keys is unavailable.
func (p *scanner) describeOnly(e *entry) {
	n := &e.next
	d, err := describe(e.serial)
	if err != nil {
		if st, ok := stateOf(err); ok {
			n.state = st
		} else {
			n.state = stateHidden
		}
		return
	}
	// Without /proc/keys the expiry cannot be seen: keep the old one.
	n.uid, n.gid, n.perm, n.keyring = d.UID, d.GID, d.Perm, d.Type == "keyring"
	n.noExpiry, n.expLo, n.expHi = e.snap.noExpiry, e.snap.expLo, e.snap.expHi
	n.desc = e.snap.desc
}
