package inventory

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/store"
)

// A machine assigned through a channel is behind it until it was verified to run what the
// channel points at; after a promote it is behind again. A machine assigned a version follows
// no channel and is never counted.
func TestMachinesBehindChannel(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SyncMachines([]machines.Machine{{ID: "follows", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:00:00:01")}}, {ID: "pinned", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:00:00:02")}}})
	v1 := images.Image{Name: "debian", Version: "1", Digest: images.Digest{1}}
	v2 := images.Image{Name: "debian", Version: "2", Digest: images.Digest{2}}
	st.PutImage(v1)
	st.PutImage(v2)
	st.Promote("debian", "1", "stable", "test")
	inv, err := New(st, Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var events []machines.Event
	ch, cancel := inv.Subscribe()
	defer cancel()
	c := inv.Collector()
	behind := func(when string, want int) {
		t.Helper()
		if got := testutil.ToFloat64(c); got != float64(want) {
			t.Errorf("%s: imaged_machines_behind_channel = %v, want %d", when, got, want)
		}
	}
	behind("nothing assigned", 0)
	img, err := st.ResolveImage(images.Ref{Name: "debian", Tag: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := inv.Assign("follows", img, "alice")
	if err != nil || m.AssignedChannel != "debian@stable" || m.AssignedImage != v1.Digest {
		t.Fatalf("assign through the channel: %+v %v", m, err)
	}
	pinned, _ := st.ResolveImage(images.Ref{Name: "debian", Tag: "1"})
	if m, err := inv.Assign("pinned", pinned, "alice"); err != nil || m.AssignedChannel != "" {
		t.Fatalf("assign a version: %+v %v", m, err)
	}
	events = append(events, <-ch, <-ch)
	if !strings.Contains(events[0].Message, "through debian@stable") || events[0].Fields["channel"] != "debian@stable" || events[1].Fields["channel"] != "" {
		t.Errorf("assign events: %+v", events)
	}
	behind("assigned, not yet written", 1)
	for _, id := range []string{"follows", "pinned"} {
		st.SetCurrentImage(id, v1.Digest)
	}
	inv.Reload()
	behind("both run version 1", 0)
	st.Promote("debian", "2", "stable", "bob")
	behind("after the promote", 1)
	st.Rollback("debian", "stable", "bob")
	behind("after the rollback", 0)
}
