package jobs

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imaged/imaged/images"
)

func phasesOf(j Job) []Phase {
	var out []Phase
	for _, p := range j.Phases {
		out = append(out, p.Phase)
	}
	return out
}

func checkTimings(t *testing.T, j Job) {
	t.Helper()
	for i, p := range j.Phases {
		if p.Start.IsZero() || p.End.IsZero() || p.End.Before(p.Start) {
			t.Errorf("phase %d %s: start %v end %v", i, p.Phase, p.Start, p.End)
		}
		if i > 0 && p.Start.Before(j.Phases[i-1].End) {
			t.Errorf("phase %s starts before %s ended", p.Phase, j.Phases[i-1].Phase)
		}
	}
}

func TestReimageHappyPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1"})
		j := h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22}})
		if j.State != StateQueued || j.Phase != PhaseQueued || len(j.ID) != 13 {
			t.Fatalf("submitted: %+v", j)
		}
		j = h.waitDone(j.ID)
		if j.State != StateSucceeded || j.Reason != "" {
			t.Fatalf("state %s reason %q\n%s", j.State, j.Reason, timeline(j))
		}
		if diff := cmp.Diff(reimagePhases, phasesOf(j)); diff != "" {
			t.Errorf("phases (-want +got):\n%s", diff)
		}
		checkTimings(t, j)
		// Netboot (3+2+3 s) and write (10 s) in the world's time.
		d := func(p Phase) time.Duration {
			for _, x := range j.Phases {
				if x.Phase == p {
					return x.End.Sub(x.Start)
				}
			}
			return -1
		}
		if got := d(PhaseNetbooting); got != 8*time.Second {
			t.Errorf("netbooting took %s, want 8s", got)
		}
		if got := d(PhaseWriting); got < 10*time.Second || got > 11*time.Second {
			t.Errorf("writing took %s, want about 10s", got)
		}
		if j.Netboot == nil || j.Netboot.DHCP.IsZero() || j.Netboot.Script.IsZero() || j.Netboot.Hello.IsZero() {
			t.Errorf("netboot sub-steps: %+v", j.Netboot)
		}
		if j.Progress == nil || j.Progress.BytesTotal != imgNew.Size || j.Result == nil || !j.Result.Verified || j.Ready == nil || j.Ready.Probed.IsZero() {
			t.Errorf("progress %+v result %+v ready %+v", j.Progress, j.Result, j.Ready)
		}
		fm := h.machine("n1")
		wantCalls := []string{"state", "off", "state", "boot:pxe", "state", "on", "state", "state", "off", "state", "boot:disk", "state", "on", "state"}
		if diff := cmp.Diff(wantCalls, fm.calls); diff != "" {
			t.Errorf("BMC calls (-want +got):\n%s", diff)
		}
		if fm.disk != imgNew.Digest.String() || fm.runs != "os" || !fm.on || fm.booted[len(fm.booted)-1] != imgNew.Digest.String() {
			t.Errorf("machine: disk %s runs %s booted %v", fm.disk, fm.runs, fm.booted)
		}
		if rec := h.record("n1"); rec.CurrentImage != imgNew.Digest || rec.AssignedImage != imgNew.Digest {
			t.Errorf("record: current %s assigned %s", rec.CurrentImage, rec.AssignedImage)
		}
		// Every timeline line became a machine event.
		h.mu.Lock()
		nev := len(h.events)
		h.mu.Unlock()
		if nev != j.Seq || nev < 15 {
			t.Errorf("%d events, %d timeline lines", nev, j.Seq)
		}
		reg := h.gen.reg
		if n := testutil.ToFloat64(h.mgr().met.total.WithLabelValues("reimage", "succeeded")); n != 1 {
			t.Errorf("imaged_jobs_total{succeeded} = %v", n)
		}
		if n, err := testutil.GatherAndCount(reg, "imaged_job_phase_seconds"); err != nil || n != len(reimagePhases) {
			t.Errorf("phase histograms: %d, %v", n, err)
		}
		if n := testutil.ToFloat64(h.mgr().met.current.WithLabelValues("active")); n != 0 {
			t.Errorf("active gauge %v", n)
		}
		// The stored job is what Get returns, and List finds it.
		if l := h.mgr().List(Filter{Machine: "n1"}); len(l) != 1 || l[0].ID != j.ID || l[0].State != StateSucceeded {
			t.Errorf("List: %+v", l)
		}
		if l := h.mgr().List(Filter{Active: true}); len(l) != 0 {
			t.Errorf("active List: %d", len(l))
		}
		h.checkWorld()
	})
}

func TestRebootJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1", checkIn: true})
		j := h.waitDone(h.submit(Request{Kind: KindReboot, Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22, CheckIn: true}}).ID)
		if j.State != StateSucceeded {
			t.Fatalf("%s %q\n%s", j.State, j.Reason, timeline(j))
		}
		if diff := cmp.Diff([]Phase{PhaseQueued, PhaseRebooting, PhaseBootingOS, PhaseReady}, phasesOf(j)); diff != "" {
			t.Errorf("phases (-want +got):\n%s", diff)
		}
		checkTimings(t, j)
		fm := h.machine("n1")
		if slices.ContainsFunc(fm.calls, func(c string) bool { return strings.HasPrefix(c, "boot:") }) {
			t.Errorf("a reboot set a boot override: %v", fm.calls)
		}
		if fm.gen != 2 || fm.runs != "os" || j.Ready.CheckedIn.IsZero() || j.Ready.Probed.IsZero() {
			t.Errorf("machine gen %d runs %s; ready %+v", fm.gen, fm.runs, j.Ready)
		}
		h.checkWorld()
	})
}

// Each phase that waits fails at its deadline, in that phase, with a reason. (verifying and
// ready decide from the machine record at once and cannot time out.)
func TestPhaseTimeouts(t *testing.T) {
	for _, tc := range []struct {
		phase Phase
		setup func(*machine)
		want  string
	}{
		{PhaseFencing, func(m *machine) { m.slow = map[string]time.Duration{"off": time.Hour} }, "fencing did not finish within 30s: power off"},
		{PhaseBootSet, func(m *machine) { m.slow = map[string]time.Duration{"boot:pxe": time.Hour} }, "boot-set did not finish within 30s"},
		{PhasePoweringOn, func(m *machine) { m.slow = map[string]time.Duration{"on": time.Hour} }, "powering-on did not finish within 30s: power on"},
		{PhaseNetbooting, func(m *machine) { m.noNetboot = true }, "did not netboot within 1m30s: no DHCP request"},
		{PhaseWriting, func(m *machine) { m.write = 20 * time.Minute }, "the write did not finish within 10m0s (last report:"},
		{PhaseRebooting, func(m *machine) { m.slow = map[string]time.Duration{"boot:disk": time.Hour} }, "rebooting did not finish within 1m0s"},
		{PhaseBootingOS, func(m *machine) { m.osDead = true }, "not ready within 5m0s: probe tcp/22 failed"},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig()
				cfg.Cycles = -1
				fm := &machine{id: "n1"}
				tc.setup(fm)
				h := newHarness(t, cfg, fm)
				j := h.waitDone(h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22}}).ID)
				if j.State != StateFailed || j.Phase != tc.phase || !strings.Contains(j.Reason, tc.want) {
					t.Fatalf("%s in %s: %q, want failed in %s: %q\n%s", j.State, j.Phase, j.Reason, tc.phase, tc.want, timeline(j))
				}
				checkTimings(t, j)
				// Deadlines are the phase's timeout after it started.
				last := j.Phases[len(j.Phases)-1]
				if last.Phase == PhaseStopping {
					last = j.Phases[len(j.Phases)-2]
				}
				if got, want := last.End.Sub(last.Start), cfg.Timeouts[tc.phase]; got < want || got > want+time.Second {
					t.Errorf("%s lasted %s, timeout %s", tc.phase, got, want)
				}
				if n := testutil.ToFloat64(h.mgr().met.failures.WithLabelValues("reimage", string(tc.phase))); n != 1 {
					t.Errorf("failures{%s} = %v", tc.phase, n)
				}
				h.checkWorld()
			})
		})
	}
}

func TestQueueTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.PerChassis = 1
		cfg.Timeouts = map[Phase]time.Duration{PhaseQueued: 30 * time.Second}
		h := newHarness(t, cfg, &machine{id: "n1"}, &machine{id: "n2"})
		a := h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22}})
		b := h.submit(Request{Machine: "n2"})
		jb := h.waitDone(b.ID)
		if jb.State != StateFailed || jb.Phase != PhaseQueued || !strings.Contains(jb.Reason, "waited in the queue for 30s") {
			t.Errorf("%s in %s: %q", jb.State, jb.Phase, jb.Reason)
		}
		if ja := h.waitDone(a.ID); ja.State != StateSucceeded {
			t.Errorf("a: %s %q", ja.State, ja.Reason)
		}
		if fm := h.machine("n2"); len(fm.calls) != 0 {
			t.Errorf("the queued machine was touched: %v", fm.calls)
		}
	})
}

func TestBMCRetries(t *testing.T) {
	t.Run("recovers", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, testConfig(), &machine{id: "n1", fail: 3})
			j := h.waitDone(h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22}}).ID)
			if j.State != StateSucceeded {
				t.Fatalf("%s %q\n%s", j.State, j.Reason, timeline(j))
			}
			if n := testutil.ToFloat64(h.mgr().met.retries.WithLabelValues("reimage", "step")); n != 3 {
				t.Errorf("retries = %v, want 3", n)
			}
			if !strings.Contains(timeline(j), "power off failed (attempt 3 of 4): read the power state: BMC: 503") {
				t.Errorf("attempts not on the timeline:\n%s", timeline(j))
			}
		})
	})
	t.Run("bounded", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, testConfig(), &machine{id: "n1", fail: 100, failOp: "boot:pxe"})
			j := h.waitDone(h.submit(Request{Machine: "n1"}).ID)
			if j.State != StateFailed || j.Phase != PhaseBootSet || !strings.Contains(j.Reason, "failed 4 times, last: BMC: 503") {
				t.Fatalf("%s in %s: %q", j.State, j.Phase, j.Reason)
			}
			fm := h.machine("n1")
			n := 0
			for _, c := range fm.calls {
				if c == "boot:pxe" {
					n++
				}
			}
			if n != 4 || j.Attempts != 4 {
				t.Errorf("%d boot calls, %d attempts; want 4", n, j.Attempts)
			}
			// Failed before the machine could run the agent: it is left off, its disk and record
			// untouched.
			if fm.on || fm.disk != imgOld.Digest.String() || h.record("n1").CurrentImage != imgOld.Digest {
				t.Errorf("on %v disk %s record %s", fm.on, fm.disk, h.record("n1").CurrentImage)
			}
		})
	})
}

// A BMC that accepts "off" and leaves the machine on is caught by reading the state back; one
// that also lies about the state is caught by the netboot that never comes. Neither makes the
// record claim the new image.
func TestLyingBMC(t *testing.T) {
	t.Run("ignores off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, testConfig(), &machine{id: "n1", ignoreOff: true})
			j := h.waitDone(h.submit(Request{Machine: "n1"}).ID)
			if j.State != StateFailed || j.Phase != PhaseFencing || !strings.Contains(j.Reason, `power off was accepted, but the BMC still reads "On"`) {
				t.Fatalf("%s in %s: %q", j.State, j.Phase, j.Reason)
			}
			if rec := h.record("n1"); rec.CurrentImage != imgOld.Digest || rec.AssignedImage != imgOld.Digest {
				t.Errorf("record changed: %+v", rec)
			}
			h.checkWorld()
		})
	})
	t.Run("says off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// The OS keeps running (and checks in every few seconds), which is how the job
			// tells the BMC lied.
			h := newHarness(t, testConfig(), &machine{id: "n1", lieOff: true})
			go func() {
				for h.w.sleep(5 * time.Second) {
					if mgr, _ := h.w.daemon(); mgr != nil && h.machine("n1").runs == "os" {
						mgr.CheckIn("n1", imgOld.Digest)
					}
				}
			}()
			j := h.waitDone(h.submit(Request{Machine: "n1"}).ID)
			if j.State != StateFailed || j.Phase != PhaseNetbooting || !strings.Contains(j.Reason, "did not netboot") || j.Cycles != 2 ||
				!strings.Contains(j.Reason, "although the BMC had reported it off") {
				t.Fatalf("%s in %s (cycles %d): %q\n%s", j.State, j.Phase, j.Cycles, j.Reason, timeline(j))
			}
			fm := h.machine("n1")
			if fm.runs != "os" || fm.disk != imgOld.Digest.String() {
				t.Errorf("machine %s disk %s", fm.runs, fm.disk)
			}
			if rec := h.record("n1"); !rec.CurrentImage.IsZero() {
				t.Errorf("record says %s", rec.CurrentImage)
			}
			h.checkWorld()
		})
	})
}

func TestAgentLost(t *testing.T) {
	t.Run("recovers after a power cycle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, testConfig(), &machine{id: "n1", agentDies: 1})
			j := h.waitDone(h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22}}).ID)
			if j.State != StateSucceeded || j.Cycles != 1 {
				t.Fatalf("%s cycles %d: %q\n%s", j.State, j.Cycles, j.Reason, timeline(j))
			}
			if !strings.Contains(timeline(j), "the agent went silent: no progress for 30s") {
				t.Errorf("timeline:\n%s", timeline(j))
			}
			want := append([]Phase{PhaseQueued, PhaseFencing, PhaseBootSet, PhasePoweringOn, PhaseNetbooting, PhaseWriting}, reimagePhases[1:]...)
			if diff := cmp.Diff(want, phasesOf(j)); diff != "" {
				t.Errorf("phases (-want +got):\n%s", diff)
			}
			if n := testutil.ToFloat64(h.mgr().met.retries.WithLabelValues("reimage", "power_cycle")); n != 1 {
				t.Errorf("power cycles metric %v", n)
			}
			h.checkWorld()
		})
	})
	t.Run("bounded", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, testConfig(), &machine{id: "n1", agentDies: 100})
			j := h.waitDone(h.submit(Request{Machine: "n1"}).ID)
			if j.State != StateFailed || j.Phase != PhaseWriting || j.Cycles != 2 ||
				!strings.Contains(j.Reason, "the agent went silent") || !strings.Contains(j.Reason, "(after 2 power cycles)") ||
				!strings.Contains(j.Reason, "last report: 429496729 of 1073741824 bytes, 40%") || j.Progress.BytesDone != 429496729 {
				t.Fatalf("%s in %s (cycles %d): %q\n%s", j.State, j.Phase, j.Cycles, j.Reason, timeline(j))
			}
			fm := h.machine("n1")
			if fm.on || !strings.HasPrefix(fm.disk, "partial:") || !h.record("n1").CurrentImage.IsZero() {
				t.Errorf("on %v disk %s record %q", fm.on, fm.disk, h.record("n1").CurrentImage)
			}
			if phasesOf(j)[len(j.Phases)-1] != PhaseStopping {
				t.Errorf("no stopping phase: %v", phasesOf(j))
			}
			h.checkWorld()
		})
	})
}

// The server refuses the agent's result: the job fails at verifying, the record never shows
// the image, and the machine is not booted from its disk: it is powered off (by default), or
// left in the agent (LeaveFailedOn).
func TestResultRefused(t *testing.T) {
	for _, leave := range []bool{false, true} {
		t.Run(map[bool]string{false: "powered off", true: "left on"}[leave], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig()
				cfg.LeaveFailedOn = leave
				h := newHarness(t, cfg, &machine{id: "n1", corrupt: true})
				j := h.waitDone(h.submit(Request{Machine: "n1"}).ID)
				if j.State != StateFailed || j.Phase != PhaseVerifying || !strings.Contains(j.Reason, "the write was not verified") ||
					!strings.Contains(j.Reason, "does not match the assigned image") {
					t.Fatalf("%s in %s: %q\n%s", j.State, j.Phase, j.Reason, timeline(j))
				}
				fm := h.machine("n1")
				if rec := h.record("n1"); !rec.CurrentImage.IsZero() {
					t.Errorf("record: current %q", rec.CurrentImage)
				}
				if slices.Contains(fm.calls, "boot:disk") || len(fm.booted) != 0 {
					t.Errorf("the machine was booted from its disk: calls %v booted %v", fm.calls, fm.booted)
				}
				if fm.on == !leave || leave && fm.runs != "agent-done" {
					t.Errorf("leave %v: on %v runs %s", leave, fm.on, fm.runs)
				}
				h.checkWorld()
			})
		})
	}
}

// A cancel in each phase: the job ends cancelled in that phase; the machine is powered off when
// the agent may be writing (powering-on to verifying), and left alone otherwise.
func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		phase     Phase
		on        bool          // the machine's power after the cancel
		disk      string        // its disk
		current   images.Digest // its record
		slow      string        // BMC op made slow so that the phase lasts
		untouched bool          // no BMC call at all
	}{
		{phase: PhaseQueued, on: true, disk: imgOld.Digest.String(), current: imgOld.Digest, untouched: true},
		{phase: PhaseFencing, on: true, disk: imgOld.Digest.String(), current: imgOld.Digest, slow: "off"},
		{phase: PhaseBootSet, on: false, disk: imgOld.Digest.String(), current: imgOld.Digest, slow: "boot:pxe"},
		{phase: PhasePoweringOn, on: false, disk: imgOld.Digest.String(), current: images.Digest{}, slow: "on"},
		{phase: PhaseNetbooting, on: false, disk: imgOld.Digest.String(), current: images.Digest{}},
		{phase: PhaseWriting, on: false, disk: "partial:" + imgNew.Digest.String(), current: images.Digest{}},
		{phase: PhaseRebooting, on: false, disk: imgNew.Digest.String(), current: imgNew.Digest, slow: "boot:disk"},
		{phase: PhaseBootingOS, on: true, disk: imgNew.Digest.String(), current: imgNew.Digest},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig()
				cfg.PerChassis = 1
				fm := &machine{id: "n1"}
				if tc.slow != "" {
					fm.slow = map[string]time.Duration{tc.slow: 20 * time.Second}
				}
				machines := []*machine{fm}
				if tc.phase == PhaseQueued {
					machines = append(machines, &machine{id: "n0"})
				}
				h := newHarness(t, cfg, machines...)
				if tc.phase == PhaseQueued {
					h.submit(Request{Machine: "n0"}) // holds the chassis' only slot
				}
				j := h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22}})
				if tc.phase != PhaseQueued {
					h.waitPhase(j.ID, tc.phase)
					time.Sleep(time.Second)
				}
				c, err := h.mgr().Cancel(j.ID, "operator")
				if err != nil || c.Cancel == nil && c.State != StateCancelled {
					t.Fatalf("cancel: %+v, %v", c, err)
				}
				j = h.waitDone(j.ID)
				if j.State != StateCancelled || j.Phase != tc.phase || !strings.Contains(j.Reason, "cancelled by operator") {
					t.Fatalf("%s in %s: %q\n%s", j.State, j.Phase, j.Reason, timeline(j))
				}
				checkTimings(t, j)
				time.Sleep(time.Minute) // nothing more happens to the machine
				got := h.machine("n1")
				if got.on != tc.on || got.disk != tc.disk || h.record("n1").CurrentImage != tc.current || tc.untouched && len(got.calls) != 0 {
					t.Errorf("after the cancel: on %v disk %s record %q calls %v; want on %v disk %s record %q",
						got.on, got.disk, h.record("n1").CurrentImage, got.calls, tc.on, tc.disk, tc.current)
				}
				if _, err := h.mgr().Cancel(j.ID, "operator"); !errors.Is(err, ErrFinished) {
					t.Errorf("second cancel: %v", err)
				}
				h.checkWorld()
			})
		})
	}
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1"})
		if _, err := h.mgr().Cancel("nope", "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown job: %v", err)
		}
	})
}

func TestOneActiveJobPerMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1"}, &machine{id: "n2"})
		a := h.submit(Request{Machine: "n1"})
		busy, err := h.mgr().Submit(t.Context(), Request{Kind: KindReboot, Machine: "n1", By: "x"})
		if !errors.Is(err, ErrBusy) || busy.ID != a.ID {
			t.Fatalf("second submit: %v (job %s)", err, busy.ID)
		}
		h.submit(Request{Machine: "n2"}) // another machine is not busy
		h.waitDone(a.ID)
		if b := h.submit(Request{Kind: KindReboot, Machine: "n1"}); b.ID <= a.ID {
			t.Errorf("ids not increasing: %s then %s", a.ID, b.ID)
		}
	})
}

func TestSubmitRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1"})
		for _, tc := range []struct {
			req  Request
			want error
		}{
			{Request{Kind: KindReimage, Machine: "nope", Image: imgNew}, ErrUnknownMachine},
			{Request{Kind: "wipe", Machine: "n1"}, ErrInvalid},
			{Request{Kind: KindReimage, Machine: "n1"}, ErrInvalid},
			{Request{Kind: KindReimage, Machine: "n1", Image: imgNew, Probe: &Probe{Kind: "tcp"}}, ErrInvalid},
			{Request{Kind: KindReimage, Machine: "n1", Image: imgNew, Probe: &Probe{}}, ErrInvalid},
			{Request{Kind: KindReimage, Machine: "n1", Image: imgNew, Probe: &Probe{Kind: "icmp", Port: 1}}, ErrInvalid},
		} {
			if _, err := h.mgr().Submit(t.Context(), tc.req); !errors.Is(err, tc.want) {
				t.Errorf("%+v: %v, want %v", tc.req, err, tc.want)
			}
		}
		if l := h.mgr().List(Filter{}); len(l) != 0 {
			t.Errorf("refused requests left jobs: %d", len(l))
		}
	})
}

// A request without a probe gets its machine's, else the default; a request's own wins. A
// machine's probe that could never pass is refused when the Manager is built.
func TestProbeOfEachMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.MachineProbes = map[string]Probe{"n1": {Kind: "tcp", Port: 22}, "n3": {Kind: "tcp", Port: 3389}}
		cfg.DefaultProbe = &Probe{Kind: "http", Port: 80}
		h := newHarness(t, cfg, &machine{id: "n1"}, &machine{id: "n2"}, &machine{id: "n3"})
		for _, tc := range []struct {
			req  Request
			want string
		}{
			{Request{Machine: "n1"}, "tcp/22"},
			{Request{Machine: "n2"}, "http GET :80/ → 200"},
			{Request{Machine: "n3", Probe: &Probe{CheckIn: true}}, "check-in"},
		} {
			if j := h.submit(tc.req); j.Probe.String() != tc.want {
				t.Errorf("%s: probe %s, want %s", tc.req.Machine, j.Probe, tc.want)
			}
		}
	})
	cfg := testConfig()
	cfg.MachineProbes = map[string]Probe{"n1": {Kind: "tcp"}}
	if _, err := cfg.withDefaults(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "probe of machine n1") {
		t.Errorf("a machine probe without a port: %v", err)
	}
}

// A check-in with the wrong digest marks the machine stale and fails the job; a right one
// later clears it.
func TestCheckInWrongDigest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1", checkIn: true, osDigest: imgOld.Digest})
		j := h.waitDone(h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "http", Port: 80, CheckIn: true}}).ID)
		if j.State != StateFailed || j.Phase != PhaseBootingOS || !strings.Contains(j.Reason, "checked in with "+imgOld.Digest.String()+", not "+imgNew.Digest.String()+": the machine is stale") {
			t.Fatalf("%s in %s: %q\n%s", j.State, j.Phase, j.Reason, timeline(j))
		}
		c, ok := h.mgr().LastCheckIn("n1")
		if !ok || !c.Stale || c.Digest != imgOld.Digest || c.Expected != imgNew.Digest {
			t.Errorf("check-in: %+v %v", c, ok)
		}
		if n := testutil.ToFloat64(h.mgr().met.stale); n != 1 {
			t.Errorf("stale gauge %v", n)
		}
		// The OS is running: the job does not power it off; the verified record stays.
		if fm := h.machine("n1"); !fm.on || h.record("n1").CurrentImage != imgNew.Digest {
			t.Errorf("on %v record %s", fm.on, h.record("n1").CurrentImage)
		}
		if c, err := h.mgr().CheckIn("n1", imgNew.Digest); err != nil || c.Stale {
			t.Errorf("right check-in: %+v %v", c, err)
		}
		if n := testutil.ToFloat64(h.mgr().met.stale); n != 0 {
			t.Errorf("stale gauge %v after a right check-in", n)
		}
		if _, err := h.mgr().CheckIn("nope", imgNew.Digest); !errors.Is(err, ErrUnknownMachine) {
			t.Errorf("unknown machine: %v", err)
		}
		// A digest's text is read at the API's edge (internal/api); none at all is refused here.
		if _, err := h.mgr().CheckIn("n1", images.Digest{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("check-in without a digest: %v", err)
		}
		// Check-ins survive a restart.
		h.restart()
		if c, ok := h.mgr().LastCheckIn("n1"); !ok || c.Stale || c.Digest != imgNew.Digest {
			t.Errorf("after restart: %+v %v", c, ok)
		}
	})
}

// Without a network probe, readiness is the OS's check-in with the image's digest.
// TestCheckInRepeatsCostNothing: the booted OS's check-ins come from its address without a
// credential; the same check-in again, while no job runs for the machine, is kept in memory (its
// time refreshed) and neither stored nor logged, until CheckInRefresh has passed.
func TestCheckInRepeatsCostNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1"})
		h.mu.Lock()
		before := len(h.events)
		h.mu.Unlock()
		stored := func() time.Time {
			cs, _ := h.w.st.CheckIns()
			if len(cs) != 1 {
				return time.Time{}
			}
			return cs[0].Time
		}
		first, err := h.mgr().CheckIn("n1", imgOld.Digest)
		if err != nil {
			t.Fatal(err)
		}
		for range 1000 {
			time.Sleep(time.Second)
			if _, err := h.mgr().CheckIn("n1", imgOld.Digest); err != nil {
				t.Fatal(err)
			}
		}
		h.mu.Lock()
		logged := len(h.events) - before
		h.mu.Unlock()
		if c, _ := h.mgr().LastCheckIn("n1"); logged != 1 || !stored().Equal(first.Time) || !c.Time.After(first.Time) {
			t.Errorf("1001 identical check-ins: %d events, stored at %v (first %v), last seen %v", logged, stored(), first.Time, c.Time)
		}
		time.Sleep(CheckInRefresh)
		h.mgr().CheckIn("n1", imgOld.Digest)
		if !stored().After(first.Time) {
			t.Errorf("the check-in was not stored again after %v", CheckInRefresh)
		}
		// Another digest is news: stored and logged at once.
		h.mgr().CheckIn("n1", imgNew.Digest)
		h.mu.Lock()
		logged = len(h.events) - before
		h.mu.Unlock()
		if logged != 3 {
			t.Errorf("%d check-in events, want 3", logged)
		}
	})
}

func TestReadyByCheckIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1", checkIn: true})
		j := h.waitDone(h.submit(Request{Machine: "n1"}).ID)
		if j.State != StateSucceeded || j.Ready == nil || j.Ready.CheckedIn.IsZero() || !j.Ready.Probed.IsZero() || j.Probe != (Probe{CheckIn: true}) {
			t.Fatalf("%s %q ready %+v probe %+v", j.State, j.Reason, j.Ready, j.Probe)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1"}) // the OS never checks in
		j := h.waitDone(h.submit(Request{Machine: "n1"}).ID)
		if j.State != StateFailed || j.Phase != PhaseBootingOS || !strings.Contains(j.Reason, "the OS did not check in") {
			t.Fatalf("%s in %s: %q", j.State, j.Phase, j.Reason)
		}
	})
}

func TestStoppingCannotPowerOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1", corrupt: true})
		j := h.submit(Request{Machine: "n1"})
		h.waitPhase(j.ID, PhaseWriting)
		h.set("n1", func(m *machine) { m.fail, m.failOp = 1000, "off" })
		j = h.waitDone(j.ID)
		if j.State != StateFailed || j.Phase != PhaseVerifying || !strings.Contains(j.Reason, "; and the machine could not be powered off: power off failed 4 times") {
			t.Fatalf("%s in %s: %q\n%s", j.State, j.Phase, j.Reason, timeline(j))
		}
		h.checkWorld()
	})
}

func TestIDs(t *testing.T) {
	m := &Manager{}
	t0 := time.Unix(1700000000, 0)
	a, b := m.newIDLocked(t0), m.newIDLocked(t0)
	c := m.newIDLocked(t0.Add(-time.Hour)) // the clock stepped back
	d := m.newIDLocked(t0.Add(time.Millisecond))
	if !(a < b && b < c && c < d) || len(a) != 13 || len(d) != 13 {
		t.Errorf("ids %s %s %s %s", a, b, c, d)
	}
}

// gatherPastDeadline reads imaged_jobs_past_deadline by phase from the registry, as a scrape would.
func gatherPastDeadline(t *testing.T, h *harness) map[string]float64 {
	t.Helper()
	mfs, err := h.gen.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "imaged_jobs_past_deadline" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return got
}

// A BMC call that ignores its deadline wedges the job in its phase: the manager cannot end the
// phase, and imaged_jobs_past_deadline says so (the alert ImagedJobPastDeadline fires on it).
// A phase that times out normally never shows there.
func TestPastDeadlineGauge(t *testing.T) {
	zero := map[string]float64{}
	for _, p := range append(reimagePhases, PhaseStopping) {
		zero[string(p)] = 0
	}
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Cycles = -1
		h := newHarness(t, cfg, &machine{id: "n1", slow: map[string]time.Duration{"off": time.Hour}, deaf: true},
			&machine{id: "n2", slow: map[string]time.Duration{"boot:pxe": time.Hour}})
		if diff := cmp.Diff(zero, gatherPastDeadline(t, h)); diff != "" {
			t.Fatalf("before any job (-want +got):\n%s", diff)
		}
		wedged := h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22}})
		timedOut := h.submit(Request{Machine: "n2", Probe: &Probe{Kind: "tcp", Port: 22}})
		time.Sleep(cfg.Timeouts[PhaseFencing] - time.Second)
		synctest.Wait()
		if diff := cmp.Diff(zero, gatherPastDeadline(t, h)); diff != "" {
			t.Errorf("within the fencing deadline (-want +got):\n%s", diff)
		}
		// n2's boot-set times out at its deadline and fails; n1 stays in fencing, past it.
		if j := h.waitDone(timedOut.ID); j.State != StateFailed || j.Phase != PhaseBootSet {
			t.Fatalf("n2: %s in %s: %s", j.State, j.Phase, j.Reason)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		want := maps.Clone(zero)
		want[string(PhaseFencing)] = 1
		if diff := cmp.Diff(want, gatherPastDeadline(t, h)); diff != "" {
			t.Errorf("a wedged fencing (-want +got):\n%s", diff)
		}
		if j, _ := h.mgr().Get(wedged.ID); j.State != StateRunning || j.Phase != PhaseFencing {
			t.Errorf("n1: %s in %s, want still running in fencing", j.State, j.Phase)
		}
	})
}

// The failure and outcome series exist before the first job, so that increase() over them sees
// the first failure after a start.
func TestJobSeriesExistFromStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1"})
		for name, want := range map[string]int{
			"imaged_job_failures_total": len(reimagePhases) + len(rebootPhases),
			"imaged_jobs_total":         2 * 3,
		} {
			if n, err := testutil.GatherAndCount(h.gen.reg, name); err != nil || n != want {
				t.Errorf("%s: %d series (%v), want %d", name, n, err, want)
			}
		}
		if got := testutil.ToFloat64(h.mgr().met.failures.WithLabelValues("reimage", string(PhaseVerifying))); got != 0 {
			t.Errorf("failures{verifying} = %v at start", got)
		}
	})
}

// Latest is a machine's newest job from memory: the running one (with its live state), else the
// newest finished one, also after a restart (read back from the store once).
func TestLatest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1"}, &machine{id: "n2"})
		if j, ok := h.mgr().Latest("n1"); ok {
			t.Fatalf("a machine without jobs has a latest: %+v", j)
		}
		first := h.submit(Request{Machine: "n1", Probe: &Probe{Kind: "tcp", Port: 22}})
		if j, ok := h.mgr().Latest("n1"); !ok || j.ID != first.ID || j.State.Done() {
			t.Fatalf("latest while it runs: %+v %v", j, ok)
		}
		h.waitDone(first.ID)
		second := h.submit(Request{Machine: "n1", Kind: KindReboot, Probe: &Probe{Kind: "tcp", Port: 22}})
		if _, err := h.mgr().Cancel(second.ID, "operator"); err != nil {
			t.Fatal(err)
		}
		h.waitDone(second.ID)
		if j, ok := h.mgr().Latest("n1"); !ok || j.ID != second.ID || j.State != StateCancelled {
			t.Fatalf("latest once finished: %+v %v", j, ok)
		}
		h.restart()
		if j, ok := h.mgr().Latest("n1"); !ok || j.ID != second.ID || j.State != StateCancelled || len(j.Timeline) == 0 {
			t.Fatalf("latest after a restart: %+v %v", j, ok)
		}
		if _, ok := h.mgr().Latest("n2"); ok {
			t.Errorf("n2 has a latest job")
		}
	})
}
