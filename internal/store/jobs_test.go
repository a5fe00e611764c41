package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/internal/machines"
)

// putJob stores a job whose data is its id and whether it is done.
func putJob(s *Store, id, machine string, done bool) error {
	data, _ := json.Marshal(map[string]any{"id": id, "done": done})
	return s.PutJob(id, machine, done, data)
}

// ids reads the ids out of jobs' data.
func ids(data [][]byte) []string {
	out := []string{}
	for _, d := range data {
		var j struct{ ID string }
		json.Unmarshal(d, &j)
		out = append(out, j.ID)
	}
	return out
}

// A file written by the previous schema (2) gains the job buckets, and keeps its machines.
func TestMigrateSchema2ToJobs(t *testing.T) {
	s := openOld(t, 2, func(tx *bolt.Tx) error {
		return put(tx, bucketMachines, "m1", machines.Machine{ID: "m1", CurrentImage: digest("a")})
	})
	if m, err := s.Machine("m1"); err != nil || m.CurrentImage != digest("a") {
		t.Errorf("machine after migration: %+v %v", m, err)
	}
	if err := putJob(s, "j1", "m1", false); err != nil {
		t.Fatal(err)
	}
}

func TestJobsActiveIndexAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	for _, j := range []struct{ id, machine string }{{"j1", "m1"}, {"j2", "m2"}, {"j3", "m1"}} {
		if err := putJob(s, j.id, j.machine, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := putJob(s, "j1", "m1", true); err != nil {
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
	if data, err := s.Job("j1"); err != nil || string(data) != `{"done":true,"id":"j1"}` {
		t.Errorf("j1 = %s, %v", data, err)
	}
	// Those that declare what they need of the store (internal/jobs) know a missing record by
	// fs.ErrNotExist.
	if _, err := s.Job("nope"); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unknown job: %v", err)
	}
	if none, err := s.Jobs("m9"); err != nil || len(none) != 0 {
		t.Errorf("jobs of a machine without jobs: %v %v", none, err)
	}
}

func TestJobsRefused(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	if err := putJob(s, "j1", "m1", true); err != nil {
		t.Fatal(err)
	}
	if err := putJob(s, "j1", "m1", false); !errors.Is(err, ErrConflict) {
		t.Errorf("reopening a finished job: %v", err)
	}
	if err := putJob(s, "j1", "m2", true); !errors.Is(err, ErrConflict) {
		t.Errorf("moving a job to another machine: %v", err)
	}
	if err := s.PutJob("j2", "m1", false, []byte("{")); err == nil {
		t.Error("invalid JSON accepted")
	}
	if err := putJob(s, "", "m1", false); err == nil {
		t.Error("a job without an id accepted")
	}
}

// Finished jobs are bounded per machine; unfinished ones and other machines' are kept.
func TestFinishedJobsBoundedPerMachine(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	id := func(i int) string { return fmt.Sprintf("j%04d", i) }
	if err := putJob(s, id(0), "m1", false); err != nil { // the oldest, still running
		t.Fatal(err)
	}
	if err := putJob(s, id(1), "m2", true); err != nil {
		t.Fatal(err)
	}
	n := MaxFinishedJobs + 5
	for i := 2; i < 2+n; i++ {
		if err := putJob(s, id(i), "m1", true); err != nil {
			t.Fatal(err)
		}
	}
	m1, err := s.Jobs("m1")
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(m1); len(got) != MaxFinishedJobs+1 || got[0] != id(0) || got[1] != id(7) || got[len(got)-1] != id(1+n) {
		t.Errorf("m1 keeps %d jobs: first %s, %s, last %s", len(got), got[0], got[1], got[len(got)-1])
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
	for _, c := range []machines.CheckIn{
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
	want := []machines.CheckIn{
		{Machine: "m1", Digest: digest("b"), Time: t0.Add(time.Minute), Expected: digest("b")},
		{Machine: "m2", Digest: digest("c"), Time: t0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("check-ins (-want +got):\n%s", diff)
	}
	if err := s.PutCheckIn(machines.CheckIn{Digest: digest("d")}); err == nil {
		t.Error("check-in without machine accepted")
	}
}

// TestMigrateBootEventsApart: schema 3 kept one event log per machine; schema 4 moves its boot
// events (DHCP, TFTP, scripts, assets) into the boot log and leaves the rest in the audit log.
func TestMigrateBootEventsApart(t *testing.T) {
	kinds := []string{"dhcp", "job", "tftp", "script", "assign", "http", "hello"}
	s := openOld(t, 3, func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketEvents).CreateBucket([]byte("m1"))
		if err != nil {
			return err
		}
		for i, k := range kinds {
			data, _ := json.Marshal(machines.Event{Seq: uint64(i + 1), Machine: "m1", Kind: k, Message: k})
			if err := b.Put(seqKey(uint64(i+1)), data); err != nil {
				return err
			}
		}
		return nil
	})
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
