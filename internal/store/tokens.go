package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BootToken authorises one netboot of one machine: the iPXE script puts it on the agent's
// kernel command line and the agent presents it in its hello, which consumes it. The daemon
// keeps boot tokens in memory; only those a job waits for are stored, so that the job's hello
// survives a restart of the daemon.
type BootToken struct {
	Hash      string    `json:"hash"` // hex SHA-256 of the token; the token itself is never stored
	MachineID string    `json:"machine_id"`
	MAC       string    `json:"mac"`
	Profile   string    `json:"profile"`
	Issued    time.Time `json:"issued"`
	Expires   time.Time `json:"expires"`
	// Addr is the only address the hello may come from: the one imaged's DHCP leased to MAC.
	// Empty when imaged is not the DHCP server.
	Addr string `json:"addr,omitempty"`
	// Used is when a hello consumed the token, from UsedFrom.
	Used     *time.Time `json:"used,omitempty"`
	UsedFrom string     `json:"used_from,omitempty"`
}

// Session authorises an agent's requests after its hello: its plan, progress, challenge and
// result. It is bound to the machine, the MAC and the address the hello came from; a machine
// has at most one.
type Session struct {
	Hash      string    `json:"hash"` // hex SHA-256 of the session token
	MachineID string    `json:"machine_id"`
	MAC       string    `json:"mac"`
	Addr      string    `json:"addr"`
	Issued    time.Time `json:"issued"`
	Expires   time.Time `json:"expires"`
}

// migrateAgentAuth is migration 3 → 4: agent sessions, and boot events kept apart from the
// machine's audit log (events.go).
func migrateAgentAuth(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketSessions); err != nil {
		return err
	}
	return migrateBootEvents(tx)
}

// PutToken stores a token record and drops expired ones.
func (s *Store) PutToken(t BootToken) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		dropExpired[BootToken](tx.Bucket(bucketTokens), t.Issued, func(x BootToken) time.Time { return x.Expires })
		return put(tx, bucketTokens, t.Hash, t)
	})
}

// Token returns the record of a token hash.
func (s *Store) Token(hash string) (BootToken, error) {
	var t BootToken
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketTokens, hash, &t) })
	return t, err
}

// Session returns the record of a session token hash.
func (s *Store) Session(hash string) (Session, error) {
	var x Session
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketSessions, hash, &x) })
	return x, err
}

// Hello records an agent's hello in one transaction: the boot token it consumed (marked used),
// its new session (replacing any other session of the machine) and, for a machine of the
// inventory, the hello on the machine.
func (s *Store) Hello(tok BootToken, sess Session, h Hello) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		dropExpired[BootToken](tx.Bucket(bucketTokens), h.Time, func(x BootToken) time.Time { return x.Expires })
		if err := put(tx, bucketTokens, tok.Hash, tok); err != nil {
			return err
		}
		if sess.MachineID == "" {
			return nil
		}
		b := tx.Bucket(bucketSessions)
		dropExpired[Session](b, sess.Issued, func(x Session) time.Time { return x.Expires })
		var old [][]byte
		_ = b.ForEach(func(k, v []byte) error {
			var x Session
			if json.Unmarshal(v, &x) == nil && x.MachineID == sess.MachineID {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if err := put(tx, bucketSessions, sess.Hash, sess); err != nil {
			return err
		}
		var m Machine
		if err := get(tx, bucketMachines, sess.MachineID, &m); err != nil {
			return fmt.Errorf("store: machine %q: %w", sess.MachineID, err)
		}
		m.LastHello = &h
		return put(tx, bucketMachines, m.ID, m)
	})
}

// dropExpired deletes the records of b that expired before now (and those that do not decode).
func dropExpired[T any](b *bolt.Bucket, now time.Time, expires func(T) time.Time) {
	var stale [][]byte
	_ = b.ForEach(func(k, v []byte) error {
		var x T
		if json.Unmarshal(v, &x) != nil || expires(x).Before(now) {
			stale = append(stale, append([]byte(nil), k...))
		}
		return nil
	})
	for _, k := range stale {
		_ = b.Delete(k)
	}
}
