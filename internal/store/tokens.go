package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/internal/machines"
)

// migrateAgentAuth is migration 3 → 4: agent sessions, and boot events kept apart from the
// machine's audit log (events.go).
func migrateAgentAuth(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketSessions); err != nil {
		return err
	}
	return migrateBootEvents(tx)
}

// PutToken stores a token record and drops expired ones.
func (s *Store) PutToken(t machines.BootToken) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		dropExpired[machines.BootToken](tx.Bucket(bucketTokens), t.Issued, func(x machines.BootToken) time.Time { return x.Expires })
		return put(tx, bucketTokens, t.Hash, t)
	})
}

// Token returns the record of a token hash.
func (s *Store) Token(hash string) (machines.BootToken, error) {
	var t machines.BootToken
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketTokens, hash, &t) })
	return t, err
}

// Session returns the record of a session token hash.
func (s *Store) Session(hash string) (machines.Session, error) {
	var x machines.Session
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketSessions, hash, &x) })
	return x, err
}

// Hello records an agent's hello in one transaction: the boot token it consumed (marked used),
// its new session (replacing any other session of the machine) and, for a machine of the
// inventory, the hello on the machine.
func (s *Store) Hello(tok machines.BootToken, sess machines.Session, h machines.Hello) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		dropExpired[machines.BootToken](tx.Bucket(bucketTokens), h.Time, func(x machines.BootToken) time.Time { return x.Expires })
		if err := put(tx, bucketTokens, tok.Hash, tok); err != nil {
			return err
		}
		if sess.MachineID == "" {
			return nil
		}
		b := tx.Bucket(bucketSessions)
		dropExpired[machines.Session](b, sess.Issued, func(x machines.Session) time.Time { return x.Expires })
		var old [][]byte
		_ = b.ForEach(func(k, v []byte) error {
			var x machines.Session
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
		var m machines.Machine
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
