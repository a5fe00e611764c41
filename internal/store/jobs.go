package store

import (
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/internal/machines"
)

// Reimage jobs. The store keeps each job as an opaque JSON document (only internal/jobs reads
// it) inside a small envelope that says what the store needs to index and bound the jobs: the
// job's id, its machine, and whether it has finished. Job ids sort by creation time, so every
// listing is oldest first.
//
// Finished jobs are bounded per machine: when a job finishes, the oldest finished jobs of its
// machine beyond MaxFinishedJobs are deleted in the same transaction. Unfinished jobs are never
// deleted. A machine's history is thus its last MaxFinishedJobs reimages and reboots whatever
// their age, which keeps the file small (a job is a few KiB) and keeps the history of a machine
// that is rarely reimaged.

// ErrConflict is a change PutJob refuses: a job moved to another machine, or reopened.
var ErrConflict = errors.New("conflicts with the stored job")

// MaxFinishedJobs is how many finished jobs are kept per machine.
const MaxFinishedJobs = 100

var (
	bucketJobs          = []byte("jobs")            // id → JobRecord
	bucketJobsActive    = []byte("jobs_active")     // id → machine, for every unfinished job
	bucketJobsByMachine = []byte("jobs_by_machine") // machine → (id → "1" finished, "0" not)
	bucketCheckIns      = []byte("check_ins")       // machine → machines.CheckIn
)

// migrateJobs is migration 2 → 3: the job buckets and the booted OS's check-ins.
func migrateJobs(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketJobs, bucketJobsActive, bucketJobsByMachine, bucketCheckIns} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

// jobRecord is a job as the store keeps it: the job's JSON (internal/jobs encodes it) in the
// envelope the store indexes by.
type jobRecord struct {
	ID      string          `json:"id"`
	Machine string          `json:"machine"`
	Done    bool            `json:"done"`
	Data    json.RawMessage `json:"data"`
}

// PutJob stores job id of machine, its JSON data, durably (one fsync), replacing the record of
// the same id. A job cannot move to another machine, and a finished (done) job cannot be
// reopened. When a job finishes, the oldest finished jobs of its machine beyond MaxFinishedJobs
// are deleted.
func (s *Store) PutJob(id, machine string, done bool, data []byte) error {
	r := jobRecord{ID: id, Machine: machine, Done: done, Data: data}
	if r.ID == "" || r.Machine == "" || !json.Valid(r.Data) {
		return fmt.Errorf("store: job %q of machine %q: id, machine and JSON data are required", r.ID, r.Machine)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		var old jobRecord
		switch err := get(tx, bucketJobs, r.ID, &old); {
		case err == nil && old.Machine != r.Machine:
			return fmt.Errorf("store: job %s belongs to machine %s, not %s: %w", r.ID, old.Machine, r.Machine, ErrConflict)
		case err == nil && old.Done && !r.Done:
			return fmt.Errorf("store: job %s has finished and cannot be reopened: %w", r.ID, ErrConflict)
		case err != nil && !errors.Is(err, ErrNotFound):
			return err
		}
		if err := put(tx, bucketJobs, r.ID, r); err != nil {
			return err
		}
		active := tx.Bucket(bucketJobsActive)
		if r.Done {
			if err := active.Delete([]byte(r.ID)); err != nil {
				return err
			}
		} else if err := active.Put([]byte(r.ID), []byte(r.Machine)); err != nil {
			return err
		}
		mb, err := tx.Bucket(bucketJobsByMachine).CreateBucketIfNotExists([]byte(r.Machine))
		if err != nil {
			return err
		}
		flag := []byte("0")
		if r.Done {
			flag = []byte("1")
		}
		if err := mb.Put([]byte(r.ID), flag); err != nil {
			return err
		}
		if !r.Done {
			return nil
		}
		return pruneJobs(tx, mb)
	})
}

// pruneJobs deletes the oldest finished jobs of one machine's index beyond MaxFinishedJobs.
func pruneJobs(tx *bolt.Tx, mb *bolt.Bucket) error {
	var done [][]byte
	_ = mb.ForEach(func(k, v []byte) error {
		if string(v) == "1" {
			done = append(done, append([]byte(nil), k...))
		}
		return nil
	})
	for _, k := range done[:max(0, len(done)-MaxFinishedJobs)] {
		if err := mb.Delete(k); err != nil {
			return err
		}
		if err := tx.Bucket(bucketJobs).Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Job returns the data of one job; an unknown id matches ErrNotFound.
func (s *Store) Job(id string) ([]byte, error) {
	var r jobRecord
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketJobs, id, &r) })
	if err != nil {
		return nil, fmt.Errorf("store: job %q: %w", id, err)
	}
	return r.Data, nil
}

// Jobs returns the data of the jobs of machine (of every machine when machine is ""), oldest
// first.
func (s *Store) Jobs(machine string) ([][]byte, error) {
	if machine == "" {
		rs, err := list[jobRecord](s.db, bucketJobs)
		return jobData(rs), err
	}
	var out []jobRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketJobsByMachine).Bucket([]byte(machine))
		if mb == nil {
			return nil
		}
		return mb.ForEach(func(k, _ []byte) error {
			var r jobRecord
			if err := get(tx, bucketJobs, string(k), &r); err != nil {
				return fmt.Errorf("store: job %s of machine %s: %w", k, machine, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return jobData(out), err
}

// ActiveJobs returns the data of every unfinished job, oldest first: what a restarted daemon
// drives on.
func (s *Store) ActiveJobs() ([][]byte, error) {
	var out []jobRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobsActive).ForEach(func(k, _ []byte) error {
			var r jobRecord
			if err := get(tx, bucketJobs, string(k), &r); err != nil {
				return fmt.Errorf("store: active job %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return jobData(out), err
}

func jobData(rs []jobRecord) [][]byte {
	out := make([][]byte, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Data)
	}
	return out
}

// PutCheckIn stores the latest check-in of a machine, replacing the previous one.
func (s *Store) PutCheckIn(c machines.CheckIn) error {
	if c.Machine == "" {
		return fmt.Errorf("store: check-in without a machine")
	}
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketCheckIns, c.Machine, c) })
}

// CheckIns returns the latest check-in of every machine that checked in, by machine id.
func (s *Store) CheckIns() ([]machines.CheckIn, error) {
	return list[machines.CheckIn](s.db, bucketCheckIns)
}
