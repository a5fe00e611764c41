package jobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/store"
)

// The world: blades behind a fake BMC, the agent they netboot into and the OS they boot from
// their disk, over the real store (a bbolt file) and the real inventory (its Plan and its check
// of the agent's result). Everything runs in a synctest bubble, so minutes pass in microseconds.
// The fake tracks what each disk really holds, so that the tests can check the record against it.

var (
	imgOld = testImage("old", 1)
	imgNew = testImage("new", 2)
)

func testImage(name string, n int) images.Image {
	sum := sha256.Sum256([]byte(name))
	return images.Image{Name: name, Version: fmt.Sprint(n), Digest: images.Digest(sum),
		Size: 1 << 30, DataBytes: 256 << 20, DataBlocks: 512, ManifestHash: sha256.Sum256([]byte("manifest-" + name)), Imported: time.Unix(1700000000, 0).UTC()}
}

// timing of the world (virtual).
type timing struct {
	post, dhcpToScript, scriptToHello, write, osBoot time.Duration
}

var labTiming = timing{post: 3 * time.Second, dhcpToScript: 2 * time.Second, scriptToHello: 3 * time.Second,
	write: 10 * time.Second, osBoot: 20 * time.Second}

// machine is one fake blade.
type machine struct {
	id, chassis string

	on bool
	// override is the one-time boot override: "", power.Pxe or power.Disk.
	override power.BootTarget
	disk     string // digest of the complete image on disk, "partial:<digest>" or ""
	gen      int    // boot generation: what runs from an older one has lost power
	runs     string // off, post, netboot, agent, os, no-os, hung
	booted   []string
	calls    []string // BMC calls

	// BMC behaviour.
	fail      int                      // the next fail matching calls fail
	failOp    string                   // "" any call, else the op ("state", "off", "on", "boot:pxe", ...)
	slow      map[string]time.Duration // op → how long the BMC takes
	deaf      bool                     // slow calls ignore the caller's cancel and deadline (a wedged client)
	ignoreOff bool                     // power off accepted, the machine stays on (the state tells the truth)
	lieOff    bool                     // power off accepted, the machine stays on, the state says Off
	offSaid   bool

	// Agent behaviour.
	noNetboot bool // the NIC never DHCPs
	agentDies int  // the agent goes silent halfway through the write this many more times
	corrupt   bool // the agent's result names another digest (refused by the server)
	write     time.Duration

	// OS behaviour.
	osDead   bool          // the OS never becomes ready
	checkIn  bool          // the OS checks in
	osDigest images.Digest // what it checks in with (zero: the disk's)
}

type world struct {
	t      *testing.T
	ctx    context.Context // ends the world's goroutines
	timing timing

	mu       sync.Mutex
	st       *store.Store
	inv      *inventory.Inventory
	mgr      *Manager // the live manager, nil while imaged is down
	machines map[string]*machine
	bad      []string // invariant violations
	wg       sync.WaitGroup
	// delivered, when set, runs after a live daemon took the agent's hello or result or the
	// OS's check-in (the agent or OS will not send it again).
	delivered func(what string)
}

func (w *world) tookIt(what string) {
	w.mu.Lock()
	f := w.delivered
	w.mu.Unlock()
	if f != nil {
		f(what)
	}
}

func (w *world) daemon() (*Manager, *inventory.Inventory) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mgr, w.inv
}

func (w *world) live(m *Manager) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return m != nil && w.mgr == m
}

func (w *world) sleep(d time.Duration) bool { return sleep(w.ctx, d) == nil }

func (w *world) alive(fm *machine, gen int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fm.on && fm.gen == gen && w.ctx.Err() == nil
}

// checkLocked is the invariant: the record never says the machine runs an image its disk does
// not hold.
func (w *world) checkLocked(fm *machine, when string) {
	if w.st == nil {
		return
	}
	rec, err := w.st.Machine(fm.id)
	if err != nil {
		return // the store is being reopened
	}
	if !rec.CurrentImage.IsZero() && rec.CurrentImage.String() != fm.disk {
		w.bad = append(w.bad, fmt.Sprintf("%s: %s: recorded as running %s, its disk holds %q", when, fm.id, rec.CurrentImage, fm.disk))
	}
}

func (w *world) setDisk(fm *machine, gen int, disk string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !fm.on || fm.gen != gen {
		return false
	}
	w.checkLocked(fm, "before the disk became "+disk)
	fm.disk = disk
	w.checkLocked(fm, "after the disk became "+disk)
	return true
}

func (w *world) setRuns(fm *machine, gen int, runs string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !fm.on || fm.gen != gen {
		return false
	}
	fm.runs = runs
	if runs == "os" {
		fm.booted = append(fm.booted, fm.disk)
	}
	return true
}

func (w *world) powerOnLocked(fm *machine) {
	fm.on, fm.runs = true, "post"
	fm.gen++
	gen := fm.gen
	w.wg.Go(func() { w.boot(fm, gen) })
}

func (w *world) boot(fm *machine, gen int) {
	if !w.sleep(w.timing.post) {
		return
	}
	w.mu.Lock()
	if !fm.on || fm.gen != gen {
		w.mu.Unlock()
		return
	}
	target := fm.override
	fm.override = "" // once
	w.mu.Unlock()
	if target == power.Pxe {
		w.netboot(fm, gen)
		return
	}
	w.bootDisk(fm, gen)
}

// signal delivers s to the live manager; false when imaged is down.
func (w *world) signal(fm *machine, s Signal) bool {
	mgr, _ := w.daemon()
	if mgr == nil {
		return false
	}
	mgr.Observe(fm.id, s)
	return w.live(mgr)
}

func (w *world) netboot(fm *machine, gen int) {
	w.mu.Lock()
	dead := fm.noNetboot
	w.mu.Unlock()
	if dead || !w.setRuns(fm, gen, "netboot") {
		return
	}
	w.signal(fm, Signal{Kind: SignalDHCP})
	if !w.sleep(w.timing.dhcpToScript) || !w.alive(fm, gen) {
		return
	}
	w.signal(fm, Signal{Kind: SignalScript})
	if !w.sleep(w.timing.scriptToHello) || !w.setRuns(fm, gen, "agent") {
		return
	}
	w.agent(fm, gen)
}

// agent is the imaged agent: hello (until a daemon takes it), plan, write with progress every
// second, result (until a daemon takes it); it never reboots.
func (w *world) agent(fm *machine, gen int) {
	for !w.signal(fm, Signal{Kind: SignalHello}) {
		if !w.sleep(2*time.Second) || !w.alive(fm, gen) {
			return
		}
	}
	w.tookIt("hello")
	var img images.Image
	for {
		if !w.alive(fm, gen) {
			return
		}
		if _, inv := w.daemon(); inv != nil {
			if p, err := inv.Plan(fm.id); err == nil {
				img = p.Image
				break
			}
		}
		if !w.sleep(5 * time.Second) {
			return
		}
	}
	if !w.setDisk(fm, gen, "partial:"+img.Digest.String()) {
		return
	}
	w.mu.Lock()
	dur := fm.write
	w.mu.Unlock()
	if dur == 0 {
		dur = w.timing.write
	}
	steps := max(2, int(dur/time.Second))
	total := img.Size
	for i := 1; i <= steps; i++ {
		if !w.sleep(dur/time.Duration(steps)) || !w.alive(fm, gen) {
			return
		}
		w.mu.Lock()
		dies := i == steps/2 && fm.agentDies > 0
		if dies {
			fm.agentDies--
			fm.runs = "hung"
		}
		w.mu.Unlock()
		if dies {
			return
		}
		w.signal(fm, Signal{Kind: SignalProgress, Progress: &agentapi.Progress{Digest: img.Digest.String(),
			BytesDone: total * int64(i) / int64(steps), BytesTotal: total, RateBytes: float64(total) / dur.Seconds()}})
	}
	res := agentapi.Result{Digest: img.Digest.String(), ManifestHash: img.ManifestHash.String(), BlocksVerified: img.DataBlocks, BytesWritten: img.Size, Device: "/dev/sda"}
	w.mu.Lock()
	corrupt := fm.corrupt
	w.mu.Unlock()
	if corrupt {
		res.Digest = imgOld.Digest.String() // what it hashed is not what it was asked to write
	} else if !w.setDisk(fm, gen, img.Digest.String()) {
		return
	}
	for w.alive(fm, gen) {
		if mgr, inv := w.daemon(); mgr != nil {
			// The proof of possession is the API's to check (internal/api); here every write
			// that happened is proven.
			m, err := inv.RecordResult(fm.id, res, func(inventory.Plan, *agentapi.Proof) error { return nil })
			if errors.Is(err, inventory.ErrResultMismatch) && m.CurrentImage.String() == res.Digest {
				err = nil // the result was already taken (a daemon died before answering)
			}
			sig := Signal{Kind: SignalResult, Verified: err == nil}
			if err != nil {
				sig.Reason = err.Error()
			}
			mgr.Observe(fm.id, sig)
			if w.live(mgr) && (err == nil || errors.Is(err, inventory.ErrResultMismatch)) {
				w.tookIt("result")
				break
			}
		}
		if !w.sleep(2 * time.Second) {
			return
		}
	}
	w.setRuns(fm, gen, "agent-done")
}

func (w *world) bootDisk(fm *machine, gen int) {
	w.mu.Lock()
	disk := fm.disk
	w.mu.Unlock()
	if disk == "" || strings.HasPrefix(disk, "partial:") {
		w.setRuns(fm, gen, "no-os")
		return
	}
	if !w.sleep(w.timing.osBoot) || !w.setRuns(fm, gen, "os") {
		return
	}
	w.mu.Lock()
	checkIn, digest := fm.checkIn, fm.osDigest
	w.mu.Unlock()
	if digest.IsZero() {
		digest, _ = images.ParseDigest(disk) // the OS hashes its disk
	}
	for checkIn && w.alive(fm, gen) {
		if mgr, _ := w.daemon(); mgr != nil {
			if _, err := mgr.CheckIn(fm.id, digest); err == nil && w.live(mgr) {
				w.tookIt("check-in")
				return
			}
		}
		if !w.sleep(5 * time.Second) {
			return
		}
	}
}

// fakeBMC is the world's power controller.
type fakeBMC struct{ w *world }

var errBMC = errors.New("BMC: 503 Service Unavailable")

func (b fakeBMC) call(ctx context.Context, id, op string) (*machine, error) {
	b.w.mu.Lock()
	fm := b.w.machines[id]
	if fm == nil {
		b.w.mu.Unlock()
		return nil, fmt.Errorf("BMC: no system %s", id)
	}
	fm.calls = append(fm.calls, op)
	slow, deaf := fm.slow[op], fm.deaf
	failing := fm.fail > 0 && (fm.failOp == "" || fm.failOp == op)
	if failing {
		fm.fail--
	}
	b.w.mu.Unlock()
	if slow > 0 {
		if deaf {
			ctx = context.WithoutCancel(ctx)
		}
		if err := sleep(ctx, slow); err != nil {
			return nil, err
		}
	}
	if failing {
		return nil, errBMC
	}
	return fm, nil
}

func (b fakeBMC) PowerState(ctx context.Context, id string) (power.State, error) {
	fm, err := b.call(ctx, id, "state")
	if err != nil {
		return "", err
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	if fm.lieOff && fm.offSaid {
		return power.Off, nil
	}
	if fm.on {
		return power.On, nil
	}
	return power.Off, nil
}

func (b fakeBMC) Power(ctx context.Context, id string, a power.Action) error {
	if a != power.ActionOn && a != power.ActionOff {
		return fmt.Errorf("fake BMC: the jobs asked for %s: %w", a, power.ErrUnsupported)
	}
	fm, err := b.call(ctx, id, string(a))
	if err != nil {
		return err
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	switch {
	case a == power.ActionOn:
		fm.offSaid = false
		if !fm.on {
			b.w.powerOnLocked(fm)
		}
	case fm.ignoreOff || fm.lieOff:
		fm.offSaid = true
	case fm.on:
		fm.on, fm.runs = false, "off"
		fm.gen++
	}
	return nil
}

func (b fakeBMC) BootOnce(ctx context.Context, id string, target power.BootTarget, uri string) error {
	fm, err := b.call(ctx, id, "boot:"+string(target))
	if err != nil {
		return err
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	fm.override = target
	return nil
}

// fakeProber: the machine answers when its OS runs.
type fakeProber struct{ w *world }

func (p fakeProber) Probe(ctx context.Context, m machines.Machine, pr Probe) error {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	fm := p.w.machines[m.ID]
	if fm == nil || !fm.on || fm.runs != "os" || fm.osDead {
		return fmt.Errorf("dial tcp %s:%d: connection refused", m.IP, pr.Port)
	}
	return nil
}

// catalog adapts the inventory as cmd/imaged would.
type catalog struct {
	inv *inventory.Inventory
	st  *store.Store
}

func (c catalog) Machine(id string) (machines.Machine, bool) { return c.inv.Machine(id) }
func (c catalog) Assign(id string, img images.Image, by string) (machines.Machine, error) {
	return c.inv.Assign(id, img, by)
}
func (c catalog) ClearCurrentImage(id string) error {
	if err := c.st.SetCurrentImage(id, images.Digest{}); err != nil {
		return err
	}
	return c.inv.Reload()
}

// The harness runs generations of the daemon over the world. A killed generation does
// nothing more: its store, BMC, catalog and prober refuse every call, as if the process had
// received SIGKILL.

var errKilled = errors.New("killed")

type generation struct {
	mgr    *Manager
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
	dead   atomic.Bool
}

type harness struct {
	t    *testing.T
	w    *world
	path string
	cfg  Config
	gen  *generation

	mu       sync.Mutex
	events   []machines.Event
	commits  int
	powerOps int
	// onCommit and onPower run after each committed job record and each BMC call that changed
	// something (counted over every generation); the crash test kills from them.
	onCommit func(n int)
	onPower  func(n int)
}

func testConfig() Config {
	c := LabConfig()
	c.ProbeInterval = time.Second
	return c
}

// newHarness makes a world with the machines (all on, running imgOld, which is also their
// record's current and assigned image) and starts a daemon.
func newHarness(t *testing.T, cfg Config, ms ...*machine) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	w := &world{t: t, ctx: ctx, timing: labTiming, machines: map[string]*machine{}}
	h := &harness{t: t, w: w, path: filepath.Join(fastTempDir(t), "imaged.db"), cfg: cfg}
	st, err := store.Open(h.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sms []machines.Machine
	for i, fm := range ms {
		if fm.chassis == "" {
			fm.chassis = "c1"
		}
		fm.on, fm.runs, fm.disk = true, "os", imgOld.Digest.String()
		w.machines[fm.id] = fm
		sms = append(sms, machines.Machine{ID: fm.id, MACs: []machines.MAC{machines.MustParseMAC(fmt.Sprintf("52:54:00:00:00:%02x", i+1))}, Chassis: fm.chassis,
			IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 10)}), Boot: "agent"})
	}
	if err := st.SyncMachines(sms); err != nil {
		t.Fatal(err)
	}
	for _, img := range []images.Image{imgOld, imgNew} {
		if _, err := st.PutImage(img); err != nil {
			t.Fatal(err)
		}
	}
	for _, fm := range ms {
		st.AssignImage(fm.id, imgOld.Digest, "")
		st.SetCurrentImage(fm.id, imgOld.Digest)
	}
	w.st = st
	w.inv, err = inventory.New(st, inventory.Config{Log: discard(), TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// After the test body: stop the daemon, then the world, and wait for both, so that the
		// bubble ends with no goroutine left.
		h.stopDaemon()
		cancel()
		w.wg.Wait()
		w.mu.Lock()
		if w.st != nil {
			w.st.Close()
		}
		w.mu.Unlock()
	})
	h.start()
	return h
}

// fastTempDir is a temporary directory in memory (/dev/shm) when there is one: the tests commit
// thousands of times, and what they check does not depend on fsync reaching a disk.
func fastTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "imaged-jobs-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (h *harness) mgr() *Manager { return h.gen.mgr }

// start runs a new daemon generation over the current store.
func (h *harness) start() {
	h.t.Helper()
	g := &generation{reg: prometheus.NewRegistry(), done: make(chan struct{})}
	h.w.mu.Lock()
	st, inv := h.w.st, h.w.inv
	h.w.mu.Unlock()
	m, err := New(h.cfg, Deps{
		Power:      genPower{g, h, fakeBMC{h.w}},
		Catalog:    genCatalog{g, catalog{inv, st}},
		Prober:     genProber{g, fakeProber{h.w}},
		Store:      genStore{g, h, st},
		Events:     h.event,
		Log:        discard(),
		Registerer: g.reg,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	g.mgr = m
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	h.gen = g
	h.w.mu.Lock()
	h.w.mgr = m
	h.w.mu.Unlock()
	go func() {
		defer close(g.done)
		if err := m.Run(ctx); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}()
}

// die stops the current generation dead: nothing it does from now on has any effect, as if
// the process had received SIGKILL. It does not wait, so hooks inside the daemon may call it.
func (h *harness) die() {
	g := h.gen
	if g == nil || g.dead.Swap(true) {
		return
	}
	h.w.mu.Lock()
	h.w.mgr = nil
	h.w.mu.Unlock()
	g.cancel()
}

// restart kills the current generation (if it is not dead yet), waits for its goroutines,
// reopens the state file and starts a new daemon, as systemd would.
func (h *harness) restart() {
	h.t.Helper()
	h.die()
	<-h.gen.done
	h.w.mu.Lock()
	h.w.st.Close()
	h.w.st, h.w.inv = nil, nil
	h.w.mu.Unlock()
	st, err := store.Open(h.path, store.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	inv, err := inventory.New(st, inventory.Config{Log: discard(), TokenTTL: time.Hour})
	if err != nil {
		h.t.Fatal(err)
	}
	h.w.mu.Lock()
	h.w.st, h.w.inv = st, inv
	h.w.mu.Unlock()
	h.start()
}

func (h *harness) stopDaemon() {
	if g := h.gen; g != nil {
		h.die()
		<-g.done
	}
}

func (h *harness) event(e machines.Event) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

func (h *harness) submit(req Request) Job {
	h.t.Helper()
	if req.Kind == "" {
		req.Kind = KindReimage
	}
	if req.Kind == KindReimage && req.Image.Digest.IsZero() {
		req.Image = imgNew
	}
	if req.By == "" {
		req.By = "test"
	}
	j, err := h.mgr().Submit(h.t.Context(), req)
	if err != nil {
		h.t.Fatalf("submit %+v: %v", req, err)
	}
	return j
}

// waitFor polls the job every 100 ms of virtual time until cond holds, for at most limit.
func (h *harness) waitFor(id string, limit time.Duration, what string, cond func(Job) bool) Job {
	h.t.Helper()
	end := time.Now().Add(limit)
	for {
		j, ok := h.mgr().Get(id)
		if ok && cond(j) {
			return j
		}
		if time.Now().After(end) {
			h.t.Fatalf("job %s: not %s after %s: state %s, phase %s, reason %q\n%s", id, what, limit, j.State, j.Phase, j.Reason, timeline(j))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *harness) waitDone(id string) Job {
	h.t.Helper()
	return h.waitFor(id, 6*time.Hour, "finished", func(j Job) bool { return j.State.Done() })
}

func (h *harness) waitPhase(id string, p Phase) Job {
	h.t.Helper()
	return h.waitFor(id, 6*time.Hour, "in "+string(p), func(j Job) bool { return j.Phase == p && j.State == StateRunning })
}

func timeline(j Job) string {
	var b strings.Builder
	for _, e := range j.Timeline {
		fmt.Fprintf(&b, "  %s %-11s %s\n", e.Time.Format("15:04:05.000"), e.Phase, e.Message)
	}
	return b.String()
}

// machine returns a snapshot of a fake machine.
func (h *harness) machine(id string) machine {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	fm := *h.w.machines[id]
	fm.calls = append([]string(nil), fm.calls...)
	fm.booted = append([]string(nil), fm.booted...)
	return fm
}

func (h *harness) set(id string, f func(*machine)) {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	f(h.w.machines[id])
}

func (h *harness) record(id string) machines.Machine {
	h.t.Helper()
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	m, err := h.w.st.Machine(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// checkWorld asserts the invariant now and reports every violation seen so far.
func (h *harness) checkWorld() {
	h.t.Helper()
	h.w.mu.Lock()
	for _, fm := range h.w.machines {
		h.w.checkLocked(fm, "at the end")
	}
	bad := h.w.bad
	h.w.mu.Unlock()
	for _, b := range bad {
		h.t.Error(b)
	}
}

// Wrappers that make a killed generation inert.

type genStore struct {
	g  *generation
	h  *harness
	st *store.Store
}

func (s genStore) PutJob(id, machine string, done bool, data []byte) error {
	if s.g.dead.Load() {
		return errKilled
	}
	if err := s.st.PutJob(id, machine, done, data); err != nil {
		return err
	}
	s.h.mu.Lock()
	s.h.commits++
	n, f := s.h.commits, s.h.onCommit
	s.h.mu.Unlock()
	if f != nil {
		f(n)
	}
	if s.g.dead.Load() {
		return errKilled
	}
	s.h.w.mu.Lock()
	for _, fm := range s.h.w.machines {
		s.h.w.checkLocked(fm, "after commit")
	}
	s.h.w.mu.Unlock()
	return nil
}

func (s genStore) Job(id string) ([]byte, error) {
	if s.g.dead.Load() {
		return nil, errKilled
	}
	return s.st.Job(id)
}

func (s genStore) Jobs(m string) ([][]byte, error) {
	if s.g.dead.Load() {
		return nil, errKilled
	}
	return s.st.Jobs(m)
}

func (s genStore) ActiveJobs() ([][]byte, error) {
	if s.g.dead.Load() {
		return nil, errKilled
	}
	return s.st.ActiveJobs()
}

func (s genStore) PutCheckIn(c machines.CheckIn) error {
	if s.g.dead.Load() {
		return errKilled
	}
	return s.st.PutCheckIn(c)
}

func (s genStore) CheckIns() ([]machines.CheckIn, error) {
	if s.g.dead.Load() {
		return nil, errKilled
	}
	return s.st.CheckIns()
}

type genPower struct {
	g *generation
	h *harness
	p fakeBMC
}

func (p genPower) act(f func() error) error {
	if p.g.dead.Load() {
		return errKilled
	}
	err := f()
	p.h.mu.Lock()
	p.h.powerOps++
	n, hook := p.h.powerOps, p.h.onPower
	p.h.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	if p.g.dead.Load() {
		return errKilled
	}
	return err
}

func (p genPower) PowerState(ctx context.Context, id string) (power.State, error) {
	if p.g.dead.Load() {
		return "", errKilled
	}
	return p.p.PowerState(ctx, id)
}
func (p genPower) Power(ctx context.Context, id string, a power.Action) error {
	return p.act(func() error { return p.p.Power(ctx, id, a) })
}
func (p genPower) BootOnce(ctx context.Context, id string, target power.BootTarget, uri string) error {
	return p.act(func() error { return p.p.BootOnce(ctx, id, target, uri) })
}

type genCatalog struct {
	g *generation
	c catalog
}

func (c genCatalog) Machine(id string) (machines.Machine, bool) {
	if c.g.dead.Load() {
		return machines.Machine{}, false
	}
	return c.c.Machine(id)
}

func (c genCatalog) Assign(id string, img images.Image, by string) (machines.Machine, error) {
	if c.g.dead.Load() {
		return machines.Machine{}, errKilled
	}
	return c.c.Assign(id, img, by)
}

func (c genCatalog) ClearCurrentImage(id string) error {
	if c.g.dead.Load() {
		return errKilled
	}
	return c.c.ClearCurrentImage(id)
}

type genProber struct {
	g *generation
	p fakeProber
}

func (p genProber) Probe(ctx context.Context, m machines.Machine, pr Probe) error {
	if p.g.dead.Load() {
		return errKilled
	}
	return p.p.Probe(ctx, m, pr)
}
