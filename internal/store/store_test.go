package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/machines"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openOld writes a state file as schema version left it (the first version migrations, then
// what fill adds) and opens it: the store migrates it to SchemaVersion, which the caller checks.
// The store closes when the test ends.
func openOld(t *testing.T, version int, fill func(tx *bolt.Tx) error) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, m := range migrations[:version] {
			if err := m(tx); err != nil {
				return err
			}
		}
		if err := fill(tx); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, uint64(version)))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	t.Cleanup(func() { s.Close() })
	if v, err := s.Version(); err != nil || v != SchemaVersion {
		t.Fatalf("version %d after migration (%v), SchemaVersion %d", v, err, SchemaVersion)
	}
	return s
}

func TestSchemaVersionAndMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	if v, err := s.Version(); err != nil || v != SchemaVersion {
		t.Fatalf("version = %d, %v", v, err)
	}
	s.Close()

	// A file from a newer imaged is refused, and left as it was.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion+1))
	})
	db.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "newer imaged") {
		t.Fatalf("newer schema accepted: %v", err)
	}
}

func TestLockedWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	_, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestLeasesSurviveReopenAndBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.PutLease(machines.Lease{MAC: machines.MAC{0x52, 0x54, 0, 0, byte(i / 256), byte(i % 256)}, Addr: netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i % 256)}), Expiry: time.Unix(1e9, 0).UTC()}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := s.DeleteLease(machines.MustParseMAC("52:54:00:00:00:07")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	ls, err := s.Leases()
	if err != nil || len(ls) != 199 {
		t.Fatalf("%d leases after reopen, %v", len(ls), err)
	}
	if ls[0].MAC.String() != "52:54:00:00:00:00" || ls[0].Addr.String() != "10.0.0.0" {
		t.Errorf("first lease %+v", ls[0])
	}
}

func TestSyncMachinesKeepsLearnedState(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	a := machines.Machine{ID: "ms1-c1n1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}, Boot: "agent"}
	b := machines.Machine{ID: "ms1-c1n2", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:12")}, Boot: "local"}
	if err := s.SyncMachines([]machines.Machine{a, b}); err != nil {
		t.Fatal(err)
	}
	h := machines.Hello{Time: time.Unix(1700000000, 0).UTC(), MAC: a.MACs[0], IP: netip.MustParseAddr("10.99.0.11")}
	if err := s.RecordHello(a.ID, h); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordHello("nope", h); !errors.Is(err, ErrNotFound) {
		t.Errorf("hello for unknown machine: %v", err)
	}
	a.WorkerGroup = "linux"
	if err := s.SyncMachines([]machines.Machine{a}); err != nil {
		t.Fatal(err)
	}
	ms, _ := s.Machines()
	a.LastHello = &h
	if diff := cmp.Diff([]machines.Machine{a}, ms, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("machines after sync (-want +got):\n%s", diff)
	}
}

func TestEventsBoundedAndOrdered(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	s.maxEvents = 10
	t0 := time.Unix(1700000000, 0).UTC()
	// Two audit events, then a flood of boot events: the boot log keeps its newest 10 and the
	// audit log keeps both of its own.
	for i := range 2 {
		if _, err := s.AddEvent(machines.Event{Machine: "m1", Time: t0, Kind: "job", Message: fmt.Sprint("job ", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 25 {
		if _, err := s.AddEvent(machines.Event{Machine: "m1", Time: t0, Kind: "dhcp", Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.AddEvent(machines.Event{Machine: "m2", Kind: "hello"})
	ev, err := s.Events("m1", 0)
	if err != nil || len(ev) != 12 {
		t.Fatalf("%d events, %v", len(ev), err)
	}
	if ev[0].Message != "job 0" || ev[1].Message != "job 1" || ev[2].Message != "15" || ev[11].Message != "24" {
		t.Errorf("kept %s, %s, %s..%s", ev[0].Message, ev[1].Message, ev[2].Message, ev[11].Message)
	}
	for i := 1; i < len(ev); i++ {
		if ev[i].Seq <= ev[i-1].Seq {
			t.Fatalf("sequence not increasing: %d after %d", ev[i].Seq, ev[i-1].Seq)
		}
	}
	if first := ev[0].Seq; first != uint64(t0.UnixMicro()) {
		t.Errorf("first sequence number %d, want the time in µs %d", first, t0.UnixMicro())
	}
	ev2, _ := s.Events("m1", ev[9].Seq)
	if len(ev2) != 2 || ev2[0].Seq != ev[10].Seq {
		t.Errorf("events after %d: %+v", ev[9].Seq, ev2)
	}
	// A coalesced repeat replaces its event in place: same sequence number, no new line.
	rep := ev[11]
	rep.Count, rep.Message = 2, "24 again"
	if _, err := s.AddEvent(rep); err != nil {
		t.Fatal(err)
	}
	ev3, _ := s.Events("m1", 0)
	if len(ev3) != 12 || ev3[11].Message != "24 again" || ev3[11].Count != 2 || ev3[11].Seq != rep.Seq {
		t.Errorf("coalesced repeat: %d events, last %+v", len(ev3), ev3[len(ev3)-1])
	}
	// A restart does not reuse a number: the next event of m1 follows the last one stored even
	// if the clock says earlier.
	last, _ := s.LastSeq("m1")
	e, _ := s.AddEvent(machines.Event{Machine: "m1", Time: t0.Add(-time.Hour), Kind: "job"})
	if e.Seq != last+1 {
		t.Errorf("seq %d after %d with an earlier clock", e.Seq, last)
	}
}

func TestUnknownMerge(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	t0 := time.Unix(1700000000, 0).UTC()
	s.RecordUnknown([]machines.Unknown{{MAC: machines.MustParseMAC("aa:bb:cc:dd:ee:ff"), FirstSeen: t0, LastSeen: t0, Count: 3, Client: "bios-pxe"}})
	s.RecordUnknown([]machines.Unknown{{MAC: machines.MustParseMAC("aa:bb:cc:dd:ee:ff"), FirstSeen: t0.Add(time.Hour), LastSeen: t0.Add(time.Hour), Count: 2, Client: "ipxe"}})
	us, _ := s.Unknowns()
	want := []machines.Unknown{{MAC: machines.MustParseMAC("aa:bb:cc:dd:ee:ff"), FirstSeen: t0, LastSeen: t0.Add(time.Hour), Count: 5, Client: "ipxe"}}
	if diff := cmp.Diff(want, us); diff != "" {
		t.Error(diff)
	}
}

func TestTokens(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	now := time.Now()
	s.PutToken(machines.BootToken{Hash: "old", Issued: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)})
	s.PutToken(machines.BootToken{Hash: "new", MachineID: "m", Issued: now, Expires: now.Add(time.Hour)})
	if _, err := s.Token("old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired token kept: %v", err)
	}
	if tk, err := s.Token("new"); err != nil || tk.MachineID != "m" {
		t.Errorf("token: %+v %v", tk, err)
	}
}

func TestMigrationFromVersion1(t *testing.T) {
	// A file as the first release wrote it: schema 1, one machine.
	s := openOld(t, 1, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMachines).Put([]byte("m1"), []byte(`{"id":"m1","macs":["52:54:00:00:00:01"],"boot":"agent"}`))
	})
	if m, err := s.Machine("m1"); err != nil || m.Boot != "agent" {
		t.Errorf("machine lost in migration: %+v %v", m, err)
	}
	if _, err := s.PutImage(images.Image{Name: "a", Version: "1", Digest: digest("e")}); err != nil {
		t.Errorf("catalog after migration: %v", err)
	}
}

func TestUnknownListBounded(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	t0 := time.Unix(1700000000, 0).UTC()
	var batch []machines.Unknown
	for i := range MaxUnknown + 10 {
		batch = append(batch, machines.Unknown{MAC: machines.MAC{2, 0, 0, 0, byte(i / 256), byte(i % 256)}, LastSeen: t0.Add(time.Duration(i) * time.Second), Count: 1})
	}
	if err := s.RecordUnknown(batch); err != nil {
		t.Fatal(err)
	}
	us, _ := s.Unknowns()
	if len(us) != MaxUnknown {
		t.Fatalf("%d unknown clients stored, want %d", len(us), MaxUnknown)
	}
	for _, u := range us {
		if u.MAC.String() == "02:00:00:00:00:00" || u.MAC.String() == "02:00:00:00:00:09" {
			t.Errorf("the least recently seen %s was kept", u.MAC)
		}
	}
}

// TestCreatedByRootForTheDaemon: root (the CLI) creating the state file in the daemon's state
// directory gives it to the directory's owner, so that the daemon can open it.
func TestCreatedByRootForTheDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot create a file for another user")
	}
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	s := open(t, filepath.Join(dir, "imaged.db"))
	s.Close()
	fi, err := os.Stat(filepath.Join(dir, "imaged.db"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o600 {
		t.Errorf("imaged.db is %d:%d %v, want 65534:65534 0600", st.Uid, st.Gid, fi.Mode().Perm())
	}
}
