package store

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/images"
)

// Records as an imaged that carried digests, MACs and addresses as strings stored them. The
// typed fields read them and write them back byte for byte, so the state file needs no
// migration: each record goes in as an older imaged wrote it, comes out through the Store, and
// is written again by the Store.
var oldRecords = []struct {
	bucket []byte
	key    string
	json   string
	read   func(s *Store, key string) (any, error)
}{
	{bucketImages, "debian@12",
		`{"name":"debian","version":"12","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":67108864,"data_bytes":17825792,"data_blocks":34,"manifest_hash":"2f651c07efc033bee463e995a8584b8605e1f184326470b219e71189d7590c85","source":"https://example.com/debian.raw","format":"raw","imported":"2026-01-02T03:04:05Z","imported_by":"alice"}`,
		func(s *Store, key string) (any, error) { return s.ResolveImage(images.Ref{Name: "debian", Tag: "12"}) }},
	{bucketMachines, "ms1-c1n1",
		`{"id":"ms1-c1n1","macs":["52:54:00:99:00:11","52:54:00:99:00:12"],"ip":"10.99.0.11","hostname":"n1","chassis":"ms1","slot":1,"bmc":"ms1","boot":"agent","last_hello":{"time":"2026-01-02T03:04:05Z","mac":"52:54:00:99:00:11","ip":"10.99.0.11","agent_version":"v1","uptime_seconds":4.5},"assigned_image":"sha256:1111111111111111111111111111111111111111111111111111111111111111","current_image":"sha256:2222222222222222222222222222222222222222222222222222222222222222","assigned_channel":"debian@stable"}`,
		func(s *Store, key string) (any, error) { return s.Machine(key) }},
	{bucketMachines, "ms1-c1n2",
		`{"id":"ms1-c1n2","macs":["52:54:00:99:00:21"],"boot":"local"}`,
		func(s *Store, key string) (any, error) { return s.Machine(key) }},
	{bucketCheckIns, "ms1-c1n1",
		`{"machine":"ms1-c1n1","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","time":"2026-01-02T03:04:05Z","expected":"sha256:1111111111111111111111111111111111111111111111111111111111111111","stale":true}`,
		func(s *Store, key string) (any, error) { return only(s.CheckIns()) }},
	{bucketCheckIns, "ms1-c1n2",
		`{"machine":"ms1-c1n2","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","time":"2026-01-02T03:04:05Z","stale":false}`,
		func(s *Store, key string) (any, error) { return only(s.CheckIns()) }},
	{bucketLeases, "52:54:00:99:00:11",
		`{"mac":"52:54:00:99:00:11","addr":"10.99.0.11","expiry":"2026-01-02T03:04:05Z","hostname":"n1","state":"bound"}`,
		func(s *Store, key string) (any, error) { return only(s.Leases()) }},
	{bucketUnknown, "52:54:00:99:00:99",
		`{"mac":"52:54:00:99:00:99","first_seen":"2026-01-02T03:04:05Z","last_seen":"2026-01-02T03:04:06Z","count":3,"client":"uefi-pxe","arch":7}`,
		func(s *Store, key string) (any, error) { return only(s.Unknowns()) }},
	{bucketTokens, "ab",
		`{"hash":"ab","machine_id":"ms1-c1n1","mac":"52:54:00:99:00:11","profile":"agent","issued":"2026-01-02T03:04:05Z","expires":"2999-01-02T03:04:05Z","addr":"10.99.0.11"}`,
		func(s *Store, key string) (any, error) { return s.Token(key) }},
	{bucketSessions, "cd",
		`{"hash":"cd","machine_id":"ms1-c1n1","mac":"52:54:00:99:00:11","addr":"10.99.0.11","issued":"2026-01-02T03:04:05Z","expires":"2999-01-02T03:04:05Z"}`,
		func(s *Store, key string) (any, error) { return s.Session(key) }},
}

func only[T any](xs []T, err error) (any, error) {
	if len(xs) != 1 {
		return nil, err
	}
	return xs[0], err
}

func TestRecordsKeepTheirBytes(t *testing.T) {
	for _, r := range oldRecords {
		t.Run(string(r.bucket)+"/"+r.key, func(t *testing.T) {
			s := open(t, filepath.Join(t.TempDir(), "state.db"))
			defer s.Close()
			if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(r.bucket).Put([]byte(r.key), []byte(r.json)) }); err != nil {
				t.Fatal(err)
			}
			v, err := r.read(s, r.key)
			if err != nil || v == nil {
				t.Fatalf("read: %v %v", v, err)
			}
			if err := s.db.Update(func(tx *bolt.Tx) error { return put(tx, r.bucket, r.key, v) }); err != nil {
				t.Fatal(err)
			}
			var got []byte
			s.db.View(func(tx *bolt.Tx) error { got = bytes.Clone(tx.Bucket(r.bucket).Get([]byte(r.key))); return nil })
			if string(got) != r.json {
				t.Errorf("written back as\n%s\nwas\n%s", got, r.json)
			}
			// And the API writes the same fields with the same text (it encodes the same types).
			if b, err := json.Marshal(v); err != nil || string(b) != r.json {
				t.Errorf("JSON: %s %v", b, err)
			}
		})
	}
}
