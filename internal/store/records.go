package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/internal/machines"
)

// SyncMachines makes the stored inventory equal to ms (the config file's), keeping what was
// learned about machines that remain. Machines no longer in the config are removed.
func (s *Store) SyncMachines(ms []machines.Machine) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMachines)
		keep := map[string]bool{}
		for _, m := range ms {
			var old machines.Machine
			if err := get(tx, bucketMachines, m.ID, &old); err == nil {
				m.LastHello, m.AssignedImage, m.CurrentImage, m.AssignedChannel = old.LastHello, old.AssignedImage, old.CurrentImage, old.AssignedChannel
			}
			if err := put(tx, bucketMachines, m.ID, m); err != nil {
				return err
			}
			keep[m.ID] = true
		}
		var gone [][]byte
		_ = b.ForEach(func(k, _ []byte) error {
			if !keep[string(k)] {
				gone = append(gone, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range gone {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Machines returns the inventory sorted by id.
func (s *Store) Machines() ([]machines.Machine, error) {
	return list[machines.Machine](s.db, bucketMachines)
}

// Machine returns one machine.
func (s *Store) Machine(id string) (machines.Machine, error) {
	var m machines.Machine
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketMachines, id, &m) })
	if err != nil {
		return m, fmt.Errorf("store: machine %q: %w", id, err)
	}
	return m, nil
}

// RecordHello stores an agent's hello on its machine.
func (s *Store) RecordHello(id string, h machines.Hello) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var m machines.Machine
		if err := get(tx, bucketMachines, id, &m); err != nil {
			return fmt.Errorf("store: machine %q: %w", id, err)
		}
		m.LastHello = &h
		return put(tx, bucketMachines, id, m)
	})
}

// PutLease stores a lease durably. Concurrent calls are committed together (bbolt's Batch), so
// a DHCP server that handles packets on many workers pays one fsync for many leases.
func (s *Store) PutLease(l machines.Lease) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return put(tx, bucketLeases, l.MAC.String(), l) })
}

// DeleteLease removes the lease of mac, if any.
func (s *Store) DeleteLease(mac machines.MAC) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bucketLeases).Delete([]byte(mac.String())) })
}

// Leases returns every stored lease.
func (s *Store) Leases() ([]machines.Lease, error) { return list[machines.Lease](s.db, bucketLeases) }

// MaxUnknown bounds the stored list of unknown clients; the least recently seen go first.
const MaxUnknown = 4096

// RecordUnknown merges sightings (MAC → count and latest details) into the stored list, and
// keeps the MaxUnknown most recently seen.
func (s *Store) RecordUnknown(seen []machines.Unknown) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, u := range seen {
			var old machines.Unknown
			if err := get(tx, bucketUnknown, u.MAC.String(), &old); err == nil {
				u.FirstSeen = old.FirstSeen
				u.Count += old.Count
			}
			if err := put(tx, bucketUnknown, u.MAC.String(), u); err != nil {
				return err
			}
		}
		// The list holds at most MaxUnknown plus one flush, so walking it is cheap. (Stats does not
		// count this transaction's own writes.)
		type entry struct {
			key  []byte
			seen time.Time
		}
		var all []entry
		b := tx.Bucket(bucketUnknown)
		_ = b.ForEach(func(k, v []byte) error {
			var u machines.Unknown
			_ = json.Unmarshal(v, &u)
			all = append(all, entry{append([]byte(nil), k...), u.LastSeen})
			return nil
		})
		if len(all) > MaxUnknown {
			sort.Slice(all, func(i, j int) bool { return all[i].seen.Before(all[j].seen) })
			for _, e := range all[:len(all)-MaxUnknown] {
				if err := b.Delete(e.key); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Unknowns lists the clients seen that are not in the inventory.
func (s *Store) Unknowns() ([]machines.Unknown, error) {
	return list[machines.Unknown](s.db, bucketUnknown)
}

// ForgetUnknown removes mac from the unknown list (for instance once it joins the inventory).
func (s *Store) ForgetUnknown(mac machines.MAC) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketUnknown).Delete([]byte(mac.String())) })
}
