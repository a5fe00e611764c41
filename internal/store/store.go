// Package store keeps imaged's state in one bbolt file: the inventory, the image catalog, reimage
// jobs and check-ins, DHCP leases, unknown clients, per-boot tokens and agent sessions, agent
// hellos and the per-machine event logs.
//
// Records are JSON values in named buckets. The file carries a schema version; Open applies the
// migrations from the file's version up to SchemaVersion in one transaction, and refuses a file
// written by a newer imaged. The records are the values of packages images and machines; the
// store implements the interfaces that jobs, inventory and the API declare in their terms, so
// that only cmd/imaged (and tests) import this package and link bbolt.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotFound is returned when a record does not exist. It matches fs.ErrNotExist, so that the
// packages that declare what they need of the store (jobs, inventory, api) can tell a missing
// record from a failure without linking the store.
var ErrNotFound error = notFound{}

type notFound struct{}

func (notFound) Error() string        { return "not found" }
func (notFound) Is(target error) bool { return target == fs.ErrNotExist }

// ErrLocked is returned by Open when another process (a running daemon) holds the file.
var ErrLocked = errors.New("the state file is in use by another imaged process")

// SchemaVersion is the layout this binary writes.
const SchemaVersion = 4

var (
	bucketMeta       = []byte("meta")
	bucketMachines   = []byte("machines")
	bucketLeases     = []byte("leases")
	bucketUnknown    = []byte("unknown_clients")
	bucketTokens     = []byte("boot_tokens")
	bucketEvents     = []byte("events")      // machine → seq → Event: the audit log
	bucketBootEvents = []byte("boot_events") // machine → seq → Event: the boot log
	bucketSessions   = []byte("agent_sessions")
	bucketImages     = []byte("images")   // name@version → Image
	bucketChannels   = []byte("channels") // name@channel → Channel
	keySchema        = []byte("schema_version")
)

// migrations[i] moves a file from schema version i to i+1. Append; never edit a released one.
var migrations = []func(tx *bolt.Tx) error{
	// 0 → 1: the first layout.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMachines, bucketLeases, bucketUnknown, bucketTokens, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 → 2: the image catalog (images and channels). Machines gain assigned and current image
	// fields, which older records simply lack.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketImages, bucketChannels} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 2 → 3: reimage jobs (jobs.go).
	migrateJobs,
	// 3 → 4: agent sessions, and the boot log apart from the audit log (tokens.go, events.go).
	migrateAgentAuth,
}

// Store is an open state file. It is safe for concurrent use.
type Store struct {
	db        *bolt.DB
	maxEvents int
}

// Options tune Open.
type Options struct {
	ReadOnly bool
	Timeout  time.Duration // how long to wait for the file lock; default 1 s
}

// Open opens or creates the state file at path and migrates it to SchemaVersion.
func Open(path string, opt Options) (*Store, error) {
	if opt.Timeout == 0 {
		opt.Timeout = time.Second
	}
	if !opt.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist) && !opt.ReadOnly
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opt.Timeout, ReadOnly: opt.ReadOnly})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if created {
		if err := giveToDirOwner(path); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
	}
	s := &Store{db: db, maxEvents: MaxEvents}
	if opt.ReadOnly {
		if err := db.View(func(tx *bolt.Tx) error { _, err := version(tx); return err }); err != nil {
			db.Close()
			return nil, err
		}
		return s, nil
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := migrate(tx); err != nil {
			return err
		}
		return redactSources(tx)
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	return s, nil
}

// giveToDirOwner gives a state file that root just created to the owner of its directory: the
// daemon's user (StateDirectory=imaged, User=imaged). Else root running `imaged image` before the
// daemon's first start would leave a file the daemon cannot open.
func giveToDirOwner(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return os.Chown(path, int(st.Uid), int(st.Gid))
}

func version(tx *bolt.Tx) (int, error) {
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return 0, nil
	}
	v := b.Get(keySchema)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("store: schema version record is corrupt (%d bytes)", len(v))
	}
	n := int(binary.BigEndian.Uint64(v))
	if n > SchemaVersion {
		return 0, fmt.Errorf("store: the file has schema version %d, written by a newer imaged; this one knows up to %d", n, SchemaVersion)
	}
	return n, nil
}

func migrate(tx *bolt.Tx) error {
	from, err := version(tx)
	if err != nil {
		return err
	}
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	for v := from; v < SchemaVersion; v++ {
		if err := migrations[v](tx); err != nil {
			return fmt.Errorf("migration %d→%d: %w", v, v+1, err)
		}
	}
	return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion))
}

// Version returns the schema version of the open file.
func (s *Store) Version() (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) (err error) { n, err = version(tx); return err })
	return n, err
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

func put(tx *bolt.Tx, bucket []byte, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), data)
}

func get(tx *bolt.Tx, bucket []byte, key string, v any) error {
	data := tx.Bucket(bucket).Get([]byte(key))
	if data == nil {
		return ErrNotFound
	}
	return json.Unmarshal(data, v)
}

func list[T any](db *bolt.DB, bucket []byte) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var x T
			if err := json.Unmarshal(v, &x); err != nil {
				return fmt.Errorf("store: %s/%s: %w", bucket, k, err)
			}
			out = append(out, x)
			return nil
		})
	})
	return out, err
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
