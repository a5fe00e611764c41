package inventory

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/store"
)

// TestBootChatterCostsNothing performs issue 11's seventh finding: 4000 anonymous boot events
// (a host fetching a machine's boot script and assets over and over) grew the state file from
// 256 KiB to 4 MiB and pushed the machine's every other event out of its 1000-event log. Now
// they are coalesced and kept in memory while no job waits: the state file does not grow, and
// the operator's audit events stay.
func TestBootChatterCostsNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	inv, st := newTestInventory(t, path, false)
	inv.Event(machines.Event{Machine: "m1", Kind: "assign", Message: "assigned debian@12 by roller"})
	before, _ := os.Stat(path)
	for i := range 4000 {
		inv.BootEvent(machines.Event{Machine: "m1", Kind: "script", Message: "iPXE script served (profile agent)",
			Fields: map[string]string{"remote": "10.99.0.66", "profile": "agent"}}, false)
		// Alternating requests are coalesced too.
		inv.BootEvent(machines.Event{Machine: "m1", Kind: "http", Message: fmt.Sprintf("HTTP vmlinuz: 200 in %d ms", i%7),
			Fields: map[string]string{"file": "vmlinuz", "status": "200"}}, false)
	}
	after, _ := os.Stat(path)
	if after.Size() != before.Size() {
		t.Errorf("the state file grew from %d to %d bytes", before.Size(), after.Size())
	}
	stored, _ := st.Events("m1", 0)
	if len(stored) != 1 || stored[0].Kind != "assign" {
		t.Errorf("stored events: %+v", stored)
	}
	ev, err := inv.Events("m1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 3 || ev[0].Kind != "assign" || ev[1].Count != 4000 || ev[2].Count != 4000 || ev[2].Last == nil {
		t.Fatalf("timeline: %+v", ev)
	}
	// Distinct boot events beyond BootMemory push out only older boot events, never the audit
	// log; while a job waits they are stored in the boot log, which is bounded on its own.
	for i := range store.MaxEvents + 10 {
		inv.BootEvent(machines.Event{Machine: "m1", Kind: "dhcp", Message: "DHCP discover",
			Fields: map[string]string{"xid": fmt.Sprint(i)}}, true)
	}
	ev, _ = inv.Events("m1", 0)
	if ev[0].Kind != "assign" {
		t.Errorf("the audit event was evicted: first is %+v", ev[0])
	}
	stored, _ = st.Events("m1", 0)
	if len(stored) != store.MaxEvents+1 {
		t.Errorf("%d stored events, want the boot log's %d and the audit event", len(stored), store.MaxEvents)
	}
	var kinds []string
	for _, e := range ev[:3] {
		kinds = append(kinds, e.Kind)
	}
	if got := strings.Join(kinds, ","); got != "assign,dhcp,dhcp" {
		t.Errorf("oldest kinds %s", got)
	}
}

// TestEventSequenceAcrossRestart: boot events kept only in memory take sequence numbers that a
// restarted daemon never hands out again, so a client following ?after= misses nothing.
func TestEventSequenceAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	inv, st := newTestInventory(t, path, false)
	inv.Event(machines.Event{Machine: "m1", Kind: "assign", Message: "a"})
	inv.BootEvent(machines.Event{Machine: "m1", Kind: "script", Message: "s"}, false)
	ev, _ := inv.Events("m1", 0)
	seen := ev[len(ev)-1].Seq
	inv2, err := New(st, Config{TokenTTL: 1})
	if err != nil {
		t.Fatal(err)
	}
	inv2.Event(machines.Event{Machine: "m1", Kind: "job", Message: "after the restart"})
	ev2, _ := inv2.Events("m1", seen)
	if len(ev2) != 1 || ev2[0].Message != "after the restart" {
		t.Errorf("events after %d: %+v", seen, ev2)
	}
}
