package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func jobRec(id, machine string, done bool) JobRecord {
	data, _ := json.Marshal(map[string]any{"id": id, "done": done})
	return JobRecord{ID: id, Machine: machine, Done: done, Data: data}
}

func ids(rs []JobRecord) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// A file written by the previous schema (2) gains the job buckets, and keeps its machines.
func TestMigrateSchema2ToJobs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, m := range migrations[:2] {
			if err := m(tx); err != nil {
				return err
			}
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if err := put(tx, bucketMachines, "m1", Machine{ID: "m1", CurrentImage: digest("a")}); err != nil {
			return err
		}
		return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, 2))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	defer s.Close()
	if v, _ := s.Version(); v != SchemaVersion {
		t.Fatalf("version %d after migration, SchemaVersion %d", v, SchemaVersion)
	}
	if m, err := s.Machine("m1"); err != nil || m.CurrentImage != digest("a") {
		t.Errorf("machine after migration: %+v %v", m, err)
	}
	if err := s.PutJob(jobRec("j1", "m1", false)); err != nil {
		t.Fatal(err)
	}
}

func TestJobsActiveIndexAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	for _, r := range []JobRecord{jobRec("j1", "m1", false), jobRec("j2", "m2", false), jobRec("j3", "m1", false)} {
		if err := s.PutJob(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutJob(jobRec("j1", "m1", true)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	active, err := s.ActiveJobs()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"j2", "j3"}, ids(active)); diff != "" {
		t.Errorf("active (-want +got):\n%s", diff)
	}
	all, _ := s.Jobs("")
	if diff := cmp.Diff([]string{"j1", "j2", "j3"}, ids(all)); diff != "" {
		t.Errorf("all (-want +got):\n%s", diff)
	}
	m1, _ := s.Jobs("m1")
	if diff := cmp.Diff([]string{"j1", "j3"}, ids(m1)); diff != "" {
		t.Errorf("m1 (-want +got):\n%s", diff)
	}
	if r, err := s.Job("j1"); err != nil || !r.Done || string(r.Data) != `{"done":true,"id":"j1"}` {
		t.Errorf("j1 = %+v %s, %v", r, r.Data, err)
	}
	if _, err := s.Job("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	if none, err := s.Jobs("m9"); err != nil || len(none) != 0 {
		t.Errorf("jobs of a machine without jobs: %v %v", none, err)
	}
}

func TestJobsRefused(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	if err := s.PutJob(jobRec("j1", "m1", true)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutJob(jobRec("j1", "m1", false)); !errors.Is(err, ErrConflict) {
		t.Errorf("reopening a finished job: %v", err)
	}
	if err := s.PutJob(jobRec("j1", "m2", true)); !errors.Is(err, ErrConflict) {
		t.Errorf("moving a job to another machine: %v", err)
	}
	if err := s.PutJob(JobRecord{ID: "j2", Machine: "m1", Data: []byte("{")}); err == nil {
		t.Error("invalid JSON accepted")
	}
	if err := s.PutJob(jobRec("", "m1", false)); err == nil {
		t.Error("a job without an id accepted")
	}
}

// Finished jobs are bounded per machine; unfinished ones and other machines' are kept.
func TestFinishedJobsBoundedPerMachine(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	id := func(i int) string { return fmt.Sprintf("j%04d", i) }
	if err := s.PutJob(jobRec(id(0), "m1", false)); err != nil { // the oldest, still running
		t.Fatal(err)
	}
	if err := s.PutJob(jobRec(id(1), "m2", true)); err != nil {
		t.Fatal(err)
	}
	n := MaxFinishedJobs + 5
	for i := 2; i < 2+n; i++ {
		if err := s.PutJob(jobRec(id(i), "m1", true)); err != nil {
			t.Fatal(err)
		}
	}
	m1, err := s.Jobs("m1")
	if err != nil {
		t.Fatal(err)
	}
	if len(m1) != MaxFinishedJobs+1 || m1[0].ID != id(0) || m1[1].ID != id(7) || m1[len(m1)-1].ID != id(1+n) {
		t.Errorf("m1 keeps %d jobs: first %s, %s, last %s", len(m1), m1[0].ID, m1[1].ID, m1[len(m1)-1].ID)
	}
	if _, err := s.Job(id(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("a pruned job is still there: %v", err)
	}
	if m2, _ := s.Jobs("m2"); len(m2) != 1 {
		t.Errorf("m2 has %d jobs", len(m2))
	}
	all, _ := s.Jobs("")
	if len(all) != MaxFinishedJobs+2 {
		t.Errorf("%d jobs in all", len(all))
	}
}

func TestCheckIns(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	t0 := time.Unix(1700000000, 0).UTC()
	for _, c := range []CheckIn{
		{Machine: "m1", Digest: digest("a"), Time: t0, Expected: digest("b"), Stale: true},
		{Machine: "m2", Digest: digest("c"), Time: t0},
		{Machine: "m1", Digest: digest("b"), Time: t0.Add(time.Minute), Expected: digest("b")},
	} {
		if err := s.PutCheckIn(c); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.CheckIns()
	if err != nil {
		t.Fatal(err)
	}
	want := []CheckIn{
		{Machine: "m1", Digest: digest("b"), Time: t0.Add(time.Minute), Expected: digest("b")},
		{Machine: "m2", Digest: digest("c"), Time: t0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("check-ins (-want +got):\n%s", diff)
	}
	if err := s.PutCheckIn(CheckIn{Digest: digest("d")}); err == nil {
		t.Error("check-in without machine accepted")
	}
}

// TestMigrateBootEventsApart: schema 3 kept one event log per machine; schema 4 moves its boot
// events (DHCP, TFTP, scripts, assets) into the boot log and leaves the rest in the audit log.
func TestMigrateBootEventsApart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"dhcp", "job", "tftp", "script", "assign", "http", "hello"}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, m := range migrations[:3] {
			if err := m(tx); err != nil {
				return err
			}
		}
		b, err := tx.Bucket(bucketEvents).CreateBucket([]byte("m1"))
		if err != nil {
			return err
		}
		for i, k := range kinds {
			data, _ := json.Marshal(Event{Seq: uint64(i + 1), Machine: "m1", Kind: k, Message: k})
			if err := b.Put(seqKey(uint64(i+1)), data); err != nil {
				return err
			}
		}
		meta, _ := tx.CreateBucketIfNotExists(bucketMeta)
		return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, 3))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	defer s.Close()
	ev, err := s.Events("m1", 0)
	if err != nil || len(ev) != len(kinds) {
		t.Fatalf("%d events after migration, %v", len(ev), err)
	}
	for i, e := range ev {
		if e.Kind != kinds[i] || e.Seq != uint64(i+1) {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		audit, boot := tx.Bucket(bucketEvents).Bucket([]byte("m1")), tx.Bucket(bucketBootEvents).Bucket([]byte("m1"))
		for _, c := range []struct {
			b    *bolt.Bucket
			want int
		}{{audit, 3}, {boot, 4}} {
			n := 0
			c.b.ForEach(func(k, v []byte) error { n++; return nil })
			if n != c.want {
				t.Errorf("a log holds %d events, want %d", n, c.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
