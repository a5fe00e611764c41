package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/internal/machines"
)

// A machine's history is kept in two logs of MaxEvents each, so that neither can push the other
// out: its audit log (operator actions, jobs, hellos, results, check-ins: what someone or
// something authenticated did) and its boot log (DHCP, TFTP, boot scripts and assets: what any
// host on the blade network can cause). Both share one sequence per machine.
//
// Sequence numbers are machines.NextSeq's: they grow across restarts of the daemon, so that the
// daemon can number boot events it keeps only in memory without reusing a number a client has
// seen.

// MaxEvents is how many events each of a machine's two logs keeps.
const MaxEvents = 1000

// BootKinds are the kinds of event that belong in the boot log.
var BootKinds = []string{"dhcp", "tftp", "script", "http"}

// IsBootKind reports whether events of kind belong in the boot log.
func IsBootKind(kind string) bool {
	for _, k := range BootKinds {
		if k == kind {
			return true
		}
	}
	return false
}

// migrateBootEvents creates the boot log and moves the boot events of the single log that
// schema 3 kept into it.
func migrateBootEvents(tx *bolt.Tx) error {
	boot, err := tx.CreateBucketIfNotExists(bucketBootEvents)
	if err != nil {
		return err
	}
	all := tx.Bucket(bucketEvents)
	return all.ForEachBucket(func(machine []byte) error {
		src := all.Bucket(machine)
		var moved [][]byte
		var dst *bolt.Bucket
		err := src.ForEach(func(k, v []byte) error {
			var e machines.Event
			if json.Unmarshal(v, &e) != nil || !IsBootKind(e.Kind) {
				return nil
			}
			if dst == nil {
				var err error
				if dst, err = boot.CreateBucketIfNotExists(machine); err != nil {
					return err
				}
			}
			moved = append(moved, append([]byte(nil), k...))
			return dst.Put(append([]byte(nil), k...), append([]byte(nil), v...))
		})
		if err != nil {
			return err
		}
		for _, k := range moved {
			if err := src.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// lastSeq is the highest sequence number of machine in either log.
func lastSeq(tx *bolt.Tx, machine string) uint64 {
	var last uint64
	for _, name := range [][]byte{bucketEvents, bucketBootEvents} {
		if b := tx.Bucket(name).Bucket([]byte(machine)); b != nil {
			if k, _ := b.Cursor().Last(); len(k) == 8 {
				last = max(last, binary.BigEndian.Uint64(k))
			}
		}
	}
	return last
}

// LastSeq returns the highest sequence number of machine's events (0: none).
func (s *Store) LastSeq(machine string) (uint64, error) {
	var n uint64
	err := s.db.View(func(tx *bolt.Tx) error { n = lastSeq(tx, machine); return nil })
	return n, err
}

// AddEvent appends e to its machine's audit log, or to its boot log if its kind is a boot kind,
// keeping the newest MaxEvents of each. A zero e.Seq is numbered here; an e.Seq that the log
// holds already replaces that event (a coalesced repeat). It returns the event as stored.
func (s *Store) AddEvent(e machines.Event) (machines.Event, error) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	err := s.db.Batch(func(tx *bolt.Tx) error {
		log := bucketEvents
		if IsBootKind(e.Kind) {
			log = bucketBootEvents
		}
		b, err := tx.Bucket(log).CreateBucketIfNotExists([]byte(e.Machine))
		if err != nil {
			return err
		}
		if e.Seq == 0 {
			e.Seq = machines.NextSeq(lastSeq(tx, e.Machine), e.Time)
		}
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := b.Put(seqKey(e.Seq), data); err != nil {
			return err
		}
		// Trim from the oldest end (counting walks at most MaxEvents+1 keys in memory).
		n := 0
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		for ; n > s.maxEvents; n-- {
			if k, _ := c.First(); k == nil || bytes.Equal(k, seqKey(e.Seq)) {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	return e, err
}

// Events returns a machine's events of both logs with Seq > after, oldest first.
func (s *Store) Events(machine string, after uint64) ([]machines.Event, error) {
	var out []machines.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEvents, bucketBootEvents} {
			b := tx.Bucket(name).Bucket([]byte(machine))
			if b == nil {
				continue
			}
			c := b.Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
				var e machines.Event
				if err := json.Unmarshal(v, &e); err != nil {
					return err
				}
				out = append(out, e)
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, err
}
