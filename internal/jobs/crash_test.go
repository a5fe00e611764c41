package jobs

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// The daemon is killed at every point of a reimage: right after each commit (the record is on
// disk, the action it announces not done), right after each BMC action (done, its outcome not
// yet committed), at every few seconds of the job's life, and over and over (a crash loop). A
// new daemon then opens the same bbolt file and carries on. Every job must end, and in this
// healthy world succeed; the machine record must never claim an image its disk does not hold
// (checked at every commit and every disk change); the machine must end up running the image.

func crashProbe() *Probe { return &Probe{Kind: "tcp", Port: 22, CheckIn: true} }

func TestCrashAtEveryPoint(t *testing.T) {
	// An undisturbed run says how many commits and BMC actions there are to kill at.
	var commits, actions int
	var length time.Duration
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1", checkIn: true})
		start := time.Now()
		j := h.waitDone(h.submit(Request{Machine: "n1", Probe: crashProbe()}).ID)
		if j.State != StateSucceeded {
			t.Fatalf("baseline: %s %q", j.State, j.Reason)
		}
		length = time.Since(start)
		h.mu.Lock()
		commits, actions = h.commits, h.powerOps
		h.mu.Unlock()
	})
	if commits < 15 || actions < 6 {
		t.Fatalf("baseline: %d commits, %d BMC actions", commits, actions)
	}
	// Each kill is followed by a restart at once, or after the daemon stayed down for 20 s
	// while the machine carried on (netbooting, writing, booting).
	for _, down := range []time.Duration{0, 20 * time.Second} {
		for k := 1; k <= commits; k++ {
			t.Run(fmt.Sprintf("after commit %d, down %s", k, down), func(t *testing.T) {
				crashRun(t, down, func(h *harness) {
					h.onCommit = func(n int) {
						if n == k {
							h.die()
						}
					}
				})
			})
		}
		for k := 1; k <= actions; k++ {
			t.Run(fmt.Sprintf("after BMC action %d, down %s", k, down), func(t *testing.T) {
				crashRun(t, down, func(h *harness) {
					h.onPower = func(n int) {
						if n == k {
							h.die()
						}
					}
				})
			})
		}
	}
	// Killed right after a message the machine will not send again reached the daemon: the
	// agent's result (answered, so the agent stops sending it) and the OS's check-in.
	for _, what := range []string{"hello", "result", "check-in"} {
		t.Run("after the "+what, func(t *testing.T) {
			crashRun(t, 0, func(h *harness) {
				h.w.delivered = func(got string) {
					if got == what {
						h.die()
					}
				}
			})
		})
	}
	for at := 500 * time.Millisecond; at < length+5*time.Second; at += 2500 * time.Millisecond {
		t.Run(fmt.Sprintf("at %s", at), func(t *testing.T) {
			crashRun(t, 0, func(h *harness) {
				go func() {
					if h.w.sleep(at) {
						h.die()
					}
				}()
			})
		})
	}
	for _, every := range []int{2, 3, 5} {
		t.Run(fmt.Sprintf("every %d commits", every), func(t *testing.T) {
			crashRun(t, 0, func(h *harness) {
				h.onCommit = func(n int) {
					if n%every == 0 {
						h.die()
					}
				}
			})
		})
	}
}

// crashRun runs one reimage with the kills arm sets up, restarting the daemon down after each.
func crashRun(t *testing.T, down time.Duration, arm func(*harness)) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1", checkIn: true})
		arm(h)
		// The submit itself may be killed: after its commit the job exists, the caller got an
		// error. Either way the job is found on the machine.
		if _, err := h.mgr().Submit(t.Context(), Request{Kind: KindReimage, Machine: "n1", Image: imgNew, By: "test", Probe: crashProbe()}); err != nil && h.commitsSoFar() == 0 {
			t.Fatalf("submit: %v", err)
		}
		restarts := 0
		end := time.Now().Add(6 * time.Hour)
		var j Job
		for {
			if h.gen.dead.Load() {
				time.Sleep(down)
				h.restart()
				restarts++
			}
			l := h.mgr().List(Filter{Machine: "n1"})
			if len(l) > 1 {
				t.Fatalf("%d jobs", len(l))
			}
			if len(l) == 1 && l[0].State.Done() && !h.gen.dead.Load() {
				j = l[0]
				break
			}
			if time.Now().After(end) {
				if len(l) == 1 {
					t.Fatalf("stuck after %d restarts: %s in %s\n%s", restarts, l[0].State, l[0].Phase, timeline(l[0]))
				}
				t.Fatalf("no job after %d restarts", restarts)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if j.State != StateSucceeded || j.Cycles != 0 {
			t.Fatalf("%s in %s after %d restarts, %d power cycles: %q\n%s", j.State, j.Phase, restarts, j.Cycles, j.Reason, timeline(j))
		}
		checkTimings(t, j)
		// The job is finished in the file, not just in memory.
		var stored Job
		if data, err := h.gen.mgr.d.Store.Job(j.ID); err != nil || json.Unmarshal(data, &stored) != nil || !stored.State.Done() {
			t.Errorf("stored: %s %v", data, err)
		}
		if a, _ := h.gen.mgr.d.Store.ActiveJobs(); len(a) != 0 {
			t.Errorf("%d active jobs stored", len(a))
		}
		time.Sleep(time.Minute) // nothing happens afterwards
		fm := h.machine("n1")
		rec := h.record("n1")
		if fm.disk != imgNew.Digest.String() || !fm.on || fm.runs != "os" || rec.CurrentImage != imgNew.Digest || rec.AssignedImage != imgNew.Digest {
			t.Errorf("machine: on %v runs %s disk %s; record current %s assigned %s", fm.on, fm.runs, fm.disk, rec.CurrentImage, rec.AssignedImage)
		}
		h.checkWorld()
	})
}

func (h *harness) commitsSoFar() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.commits
}

// A machine that never netboots, under a daemon that crashes every minute (less than the
// netboot timeout): the deadlines are stored as absolute times, so the restarts do not extend
// them and the job fails after its power cycles instead of waiting for ever.
func TestCrashLoopNeverStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig(), &machine{id: "n1", noNetboot: true})
		j := h.submit(Request{Machine: "n1"})
		start := time.Now()
		restarts := 0
		for {
			time.Sleep(time.Minute)
			h.restart()
			restarts++
			if j, _ = h.mgr().Get(j.ID); j.State.Done() {
				break
			}
			if restarts > 100 {
				t.Fatalf("stuck in %s after %d restarts\n%s", j.Phase, restarts, timeline(j))
			}
		}
		if j.State != StateFailed || j.Phase != PhaseNetbooting || j.Cycles != 2 || !strings.Contains(j.Reason, "did not netboot") {
			t.Fatalf("%s in %s (%d cycles): %q", j.State, j.Phase, j.Cycles, j.Reason)
		}
		// Three netboots of 90 s each, give or take the minute between restarts.
		if took := time.Since(start); took > 6*time.Minute {
			t.Errorf("failed after %s and %d restarts", took, restarts)
		}
		if fm := h.machine("n1"); fm.on {
			t.Error("the failed machine was left on")
		}
		h.checkWorld()
	})
}
