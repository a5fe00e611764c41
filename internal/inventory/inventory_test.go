package inventory

import (
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/store"
)

func TestUnknownSightingsBounded(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	inv, err := New(st, Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	first := net.HardwareAddr{2, 0, 0, 0, 0, 0}
	for i := range MaxPendingUnknown + 500 {
		inv.SawUnknown(net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}, "dhcp", 0)
	}
	inv.SawUnknown(first, "ipxe", 0) // a MAC already kept is still counted
	if len(inv.unknown) != MaxPendingUnknown || inv.dropped != 500 {
		t.Fatalf("pending %d, dropped %d", len(inv.unknown), inv.dropped)
	}
	if err := inv.FlushUnknown(); err != nil {
		t.Fatal(err)
	}
	us, _ := st.Unknowns()
	if len(us) != MaxPendingUnknown || us[0].MAC.String() != first.String() || us[0].Count != 2 || us[0].Client != "ipxe" {
		t.Errorf("%d stored, first %+v", len(us), us[0])
	}
	if len(inv.unknown) != 0 || inv.dropped != 0 {
		t.Error("flush did not reset the pending sightings")
	}
}
