package jobs

import (
	"testing"
	"testing/synctest"
	"time"
)

// One slot per chassis: the chassis' jobs queue in order, with ETAs from the running job's
// progress; another chassis is not held up.
func TestPerChassisQueueAndETA(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.PerChassis = 1
		cfg.LinkBytesPerSecond, cfg.MinBytesPerSecond = 1e9, 1e8
		h := newHarness(t, cfg, &machine{id: "a1"}, &machine{id: "a2"}, &machine{id: "a3"}, &machine{id: "b1", chassis: "c2"})
		probe := &Probe{Kind: "tcp", Port: 22}
		a1 := h.submit(Request{Machine: "a1", Probe: probe})
		a2 := h.submit(Request{Machine: "a2", Probe: probe})
		a3 := h.submit(Request{Machine: "a3", Probe: probe})
		b1 := h.submit(Request{Machine: "b1", Probe: probe})
		synctest.Wait()
		get := func(id string) Job {
			j, ok := h.mgr().Get(id)
			if !ok {
				t.Fatalf("no job %s", id)
			}
			return j
		}
		if j := get(b1.ID); j.State != StateRunning {
			t.Errorf("b1 (another chassis) %s", j.State)
		}
		if j := get(a1.ID); j.State != StateRunning {
			t.Errorf("a1 %s", j.State)
		}
		j2, j3 := get(a2.ID), get(a3.ID)
		if j2.State != StateQueued || j3.State != StateQueued || j2.Queue == nil || j3.Queue == nil {
			t.Fatalf("a2 %s %+v, a3 %s %+v", j2.State, j2.Queue, j3.State, j3.Queue)
		}
		if j2.Queue.Position != 1 || j3.Queue.Position != 2 || !j2.Queue.Start.After(time.Now()) ||
			!j3.Queue.Start.Equal(j2.Queue.Done) || !j2.Queue.Done.After(j2.Queue.Start) {
			t.Errorf("queue a2 %+v, a3 %+v", *j2.Queue, *j3.Queue)
		}
		first := j2.Queue.Start

		// While a1 writes, a2's ETA follows a1's progress: its rest of the write at its rate,
		// then a boot.
		h.waitPhase(a1.ID, PhaseWriting)
		time.Sleep(5 * time.Second)
		j1, j2 := get(a1.ID), get(a2.ID)
		p := j1.Progress
		if p == nil || p.BytesDone == 0 || p.BytesDone == p.BytesTotal {
			t.Fatalf("a1 progress %+v", p)
		}
		left := time.Duration(float64(p.BytesTotal-p.BytesDone) / p.RateBytes * float64(time.Second))
		want := time.Now().Add(left + cfg.ExpectBoot)
		if d := j2.Queue.Start.Sub(want); d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("a2 ETA %s, want %s (a1 has %s of writing left)", j2.Queue.Start, want, left)
		}
		if !j2.Queue.Start.Before(first) {
			t.Errorf("a2's ETA did not come closer: %s then %s", first, j2.Queue.Start)
		}
		if l := h.mgr().List(Filter{Active: true}); len(l) != 4 || l[0].ID != b1.ID || l[1].Queue == nil {
			t.Errorf("List: %d jobs", len(l))
		}

		// a2 starts when a1 ends, then a3 when a2 ends.
		h.waitDone(a1.ID)
		synctest.Wait()
		if j := get(a2.ID); j.State != StateRunning {
			t.Errorf("a2 after a1: %s", j.State)
		}
		if j := get(a3.ID); j.State != StateQueued || j.Queue.Position != 1 {
			t.Errorf("a3 after a1: %s %+v", j.State, j.Queue)
		}
		for _, id := range []string{a2.ID, a3.ID, b1.ID} {
			if j := h.waitDone(id); j.State != StateSucceeded {
				t.Errorf("%s: %s %q", j.Machine, j.State, j.Reason)
			}
		}
		ja2, ja3 := get(a2.ID), get(a3.ID)
		if ja3.Phases[1].Start.Before(ja2.Phases[len(ja2.Phases)-1].End) {
			t.Error("a3 ran alongside a2")
		}
		h.checkWorld()
	})
}

// The link admits LinkBytesPerSecond/MinBytesPerSecond writes at once; a job frees its link
// slot once its write is verified, while it still holds its chassis slot.
func TestLinkAdmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.LinkBytesPerSecond, cfg.MinBytesPerSecond = 2e8, 1e8
		h := newHarness(t, cfg, &machine{id: "a1"}, &machine{id: "a2"}, &machine{id: "a3"})
		probe := &Probe{Kind: "tcp", Port: 22}
		var ids []string
		for _, m := range []string{"a1", "a2", "a3"} {
			ids = append(ids, h.submit(Request{Machine: m, Probe: probe}).ID)
		}
		synctest.Wait()
		if j, _ := h.mgr().Get(ids[2]); j.State != StateQueued {
			t.Fatalf("a3 %s with two writes running", j.State)
		}
		h.waitFor(ids[0], time.Hour, "past its write", func(j Job) bool { return j.Phase == PhaseBootingOS || j.State.Done() })
		synctest.Wait()
		j1, _ := h.mgr().Get(ids[0])
		j3, _ := h.mgr().Get(ids[2])
		if j3.State != StateRunning || j1.State != StateRunning {
			t.Errorf("a1 %s in %s, a3 %s", j1.State, j1.Phase, j3.State)
		}
		for _, id := range ids {
			if j := h.waitDone(id); j.State != StateSucceeded {
				t.Errorf("%s: %s %q", j.Machine, j.State, j.Reason)
			}
		}
	})
}

// Reboots do not queue behind reimages.
func TestRebootNotQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.PerChassis = 1
		h := newHarness(t, cfg, &machine{id: "a1"}, &machine{id: "a2"})
		h.submit(Request{Machine: "a1", Probe: &Probe{Kind: "tcp", Port: 22}})
		r := h.submit(Request{Kind: KindReboot, Machine: "a2", Probe: &Probe{Kind: "tcp", Port: 22}})
		synctest.Wait()
		if j, _ := h.mgr().Get(r.ID); j.State != StateRunning {
			t.Errorf("reboot %s", j.State)
		}
	})
}
