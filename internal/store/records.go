package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/images"
)

// Machine is one blade of the inventory as the config file declares it, plus what imaged has
// learned about it.
type Machine struct {
	ID          string   `json:"id"`
	MACs        []string `json:"macs"`
	IP          string   `json:"ip,omitempty"`
	Hostname    string   `json:"hostname,omitempty"`
	Chassis     string   `json:"chassis,omitempty"`
	Slot        int      `json:"slot,omitempty"`
	WorkerGroup string   `json:"worker_group,omitempty"`
	WorkerType  string   `json:"worker_type,omitempty"`
	BMC         string   `json:"bmc,omitempty"`
	Boot        string   `json:"boot"`
	// DiskSerial and DiskByPath pick the disk the agent writes (from the config); empty: the
	// only non-removable disk large enough.
	DiskSerial string `json:"disk_serial,omitempty"`
	DiskByPath string `json:"disk_by_path,omitempty"`
	LastHello  *Hello `json:"last_hello,omitempty"`
	// AssignedImage is the digest the machine should run; CurrentImage the digest it was last
	// verified to run (zero: none). Both (and AssignedChannel) are kept across config reloads.
	AssignedImage images.Digest `json:"assigned_image,omitzero"`
	CurrentImage  images.Digest `json:"current_image,omitzero"`
	// AssignedChannel is the channel (name@channel) the assignment was made through, "" when it
	// named a version or a digest: the machine follows it, and is behind it once the channel
	// points at another image than the one the machine was verified to run.
	AssignedChannel string `json:"assigned_channel,omitempty"`
}

// Hello is an agent's announcement that it runs on a machine.
type Hello struct {
	Time         time.Time `json:"time"`
	MAC          string    `json:"mac"`
	IP           string    `json:"ip,omitempty"`
	AgentVersion string    `json:"agent_version,omitempty"`
	Uptime       float64   `json:"uptime_seconds,omitempty"`
}

// SyncMachines makes the stored inventory equal to ms (the config file's), keeping what was
// learned about machines that remain. Machines no longer in the config are removed.
func (s *Store) SyncMachines(ms []Machine) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMachines)
		keep := map[string]bool{}
		for _, m := range ms {
			var old Machine
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
func (s *Store) Machines() ([]Machine, error) { return list[Machine](s.db, bucketMachines) }

// Machine returns one machine.
func (s *Store) Machine(id string) (Machine, error) {
	var m Machine
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketMachines, id, &m) })
	if err != nil {
		return m, fmt.Errorf("store: machine %q: %w", id, err)
	}
	return m, nil
}

// RecordHello stores an agent's hello on its machine.
func (s *Store) RecordHello(id string, h Hello) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var m Machine
		if err := get(tx, bucketMachines, id, &m); err != nil {
			return fmt.Errorf("store: machine %q: %w", id, err)
		}
		m.LastHello = &h
		return put(tx, bucketMachines, id, m)
	})
}

// Lease is a DHCP lease, keyed by MAC.
type Lease struct {
	MAC      string    `json:"mac"`
	Addr     string    `json:"addr"`
	Expiry   time.Time `json:"expiry"`
	Hostname string    `json:"hostname,omitempty"`
	State    string    `json:"state,omitempty"`
}

// PutLease stores a lease durably. Concurrent calls are committed together (bbolt's Batch), so
// a DHCP server that handles packets on many workers pays one fsync for many leases.
func (s *Store) PutLease(l Lease) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return put(tx, bucketLeases, l.MAC, l) })
}

// DeleteLease removes the lease of mac, if any.
func (s *Store) DeleteLease(mac string) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bucketLeases).Delete([]byte(mac)) })
}

// Leases returns every stored lease.
func (s *Store) Leases() ([]Lease, error) { return list[Lease](s.db, bucketLeases) }

// Unknown is a client that asked for an address or a boot file but is not in the inventory.
type Unknown struct {
	MAC       string    `json:"mac"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int64     `json:"count"`
	Client    string    `json:"client,omitempty"` // bios-pxe, uefi-pxe, uefi-http, ipxe, dhcp
	Arch      int       `json:"arch,omitempty"`
}

// MaxUnknown bounds the stored list of unknown clients; the least recently seen go first.
const MaxUnknown = 4096

// RecordUnknown merges sightings (MAC → count and latest details) into the stored list, and
// keeps the MaxUnknown most recently seen.
func (s *Store) RecordUnknown(seen []Unknown) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, u := range seen {
			var old Unknown
			if err := get(tx, bucketUnknown, u.MAC, &old); err == nil {
				u.FirstSeen = old.FirstSeen
				u.Count += old.Count
			}
			if err := put(tx, bucketUnknown, u.MAC, u); err != nil {
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
			var u Unknown
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
func (s *Store) Unknowns() ([]Unknown, error) { return list[Unknown](s.db, bucketUnknown) }

// ForgetUnknown removes mac from the unknown list (for instance once it joins the inventory).
func (s *Store) ForgetUnknown(mac string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketUnknown).Delete([]byte(mac)) })
}
