package watchq

import (
	"bytes"
	"errors"
	"testing"

	"github.com/watchq/watchq/record"
)

// lossModel is the reference a queue's loss placement is checked against:
// a plain slice of records, each with an unbounded count of the records
// lost after it, and the rule of post_one_notification (a full ring
// flags the newest record) with the engine's counts, saturated as
// note.setLost saturates them (0xff behind a 127-byte record).
type lossModel struct {
	ring    []modelRec
	pending uint64 // loss to report before the next record
	lost    uint64 // Stats().Lost
}

type modelRec struct {
	rec  []byte
	lost uint64
}

func (m *lossModel) post(rec []byte, capacity int) {
	last := len(m.ring) - 1
	switch {
	case len(m.ring) == capacity:
		m.ring[last].lost++
		m.lost++
	default:
		m.ring = append(m.ring, modelRec{rec: rec})
	}
}

func (m *lossModel) postLoss(n uint64) {
	if n == 0 {
		return
	}
	m.lost += n
	if len(m.ring) > 0 {
		m.ring[len(m.ring)-1].lost += n
	} else {
		m.pending += n
	}
}

// read is readLocked on the model: the bytes a read of size bytes returns.
func (m *lossModel) read(size int) ([]byte, error) {
	if size == 0 {
		return nil, nil // pipe_read's "Null read succeeds"
	}
	var out []byte
	for {
		if m.pending > 0 {
			if size-len(out) < record.LossSize {
				break
			}
			var l [record.LossSize]byte
			record.PutLoss(l[:], m.pending)
			out = append(out, l[:]...)
			m.pending = 0
		}
		if len(m.ring) == 0 || len(m.ring[0].rec) > size-len(out) {
			break
		}
		out = append(out, m.ring[0].rec...)
		m.pending = m.ring[0].lost
		if len(m.ring[0].rec) == record.MaxRecordSize {
			m.pending = min(m.pending, 0xff)
		}
		m.ring = m.ring[1:]
	}
	switch {
	case len(out) > 0:
		return out, nil
	case m.pending > 0 || len(m.ring) > 0:
		return nil, ErrBufferTooSmall
	default:
		return nil, ErrWouldBlock
	}
}

// FuzzQueueLoss drives a 32-note queue with posts of every length, upstream
// losses and reads of every size, and checks each read, byte for byte, and
// the loss count against lossModel: the loss counts kept in the notes'
// free bytes must land where a count per record would.
func FuzzQueueLoss(f *testing.F) {
	f.Add([]byte{0, 4, 0, 115, 1, 200, 2, 10, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		e := NewEngine(Config{})
		wl := e.NewWatchList(Object{Kind: KindPublisher})
		q := newSized(t, 1)
		capacity := q.Stats().Capacity
		if err := wl.Add(q, 1, 0, CurrentCred()); err != nil {
			t.Fatal(err)
		}
		var m lossModel
		seq := uint32(0)
		buf := make([]byte, 4096)
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%4, int(ops[i+1])
			switch op {
			case 0: // post a record of 12..127 bytes
				seq++
				rec := sizedRec(12+arg%(record.MaxRecordSize-11), seq)
				wl.Post(rec, SystemCred, 1)
				m.post(rec, capacity)
			case 1: // upstream loss, up to 2^(arg/8) records
				n := uint64(arg%8) << (arg / 8 * 2)
				wl.PostLoss(n)
				m.postLoss(n)
			default: // read arg*8 bytes, or everything
				size := arg * 8
				if op == 3 {
					size = len(buf)
				}
				n, err := q.TryRead(buf[:size])
				want, werr := m.read(size)
				if !errors.Is(err, werr) || !bytes.Equal(buf[:n], want) {
					t.Fatalf("op %d: read of %d gave %x, %v; want %x, %v", i/2, size, buf[:n], err, want, werr)
				}
			}
			if s := q.Stats(); s.Lost != m.lost {
				t.Fatalf("op %d: %d lost, want %d", i/2, s.Lost, m.lost)
			}
		}
	})
}
