package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/initrd"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/lab"
	"github.com/imaged/imaged/internal/lab/labos"
	"github.com/imaged/imaged/internal/lab/netns"
)

// controlClient talks to a chassis's imaged over its control socket, as root: the admin scope.
type controlClient struct {
	t *testing.T
	*api.Client
}

func newControl(t *testing.T, c *lab.Chassis) *controlClient {
	return &controlClient{t: t, Client: api.NewControlClient(c.ControlSocket(), "test")}
}

func (c *controlClient) do(method, path string, body, out any) error {
	return c.Do(context.Background(), method, path, body, out)
}

// waitJob polls a job until it ends (or, with until, until until says so) and returns it.
func (c *controlClient) waitJob(id string, timeout time.Duration, until func(jobs.Job) bool) jobs.Job {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var j jobs.Job
	for {
		if err := c.do("GET", "/api/v1/jobs/"+id, nil, &j); err != nil {
			c.t.Fatal(err)
		}
		if j.State.Done() || until != nil && until(j) {
			return j
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("job %s still %s in phase %s after %s:\n%s", id, j.State, j.Phase, timeout, jobText(j))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func jobText(j jobs.Job) string {
	var b strings.Builder
	for _, p := range j.Phases {
		end := "running"
		if !p.End.IsZero() {
			end = fmt.Sprintf("%.1f s", p.End.Sub(p.Start).Seconds())
		}
		fmt.Fprintf(&b, "  %-12s %s\n", p.Phase, end)
	}
	for _, l := range j.Timeline {
		fmt.Fprintf(&b, "  %+7.1fs %-12s %s\n", l.Time.Sub(j.Created).Seconds(), l.Phase, l.Message)
	}
	return b.String()
}

// TestReimageThroughAPI is the product's main job on the virtual chassis: two blades reimaged at
// once through the API, each proven to run the image (the booted OS hashes its own disk and
// checks in with the digest); a corrupted blob fails the job, leaves the machine off and not
// recorded as running it, and block 0 unwritten; a daemon killed while a blade writes is
// restarted and the job still completes.
func TestReimageThroughAPI(t *testing.T) {
	requireLab(t)
	for _, c := range [][2]string{{"syslinux", "syslinux"}, {"mcopy", "mtools"}, {"mkfs.fat", "dosfstools"}} {
		netns.RequireCommand(t, c[0], c[1])
	}
	bin := imagedBinary(t)
	dir := filepath.Join(t.TempDir(), "chassis")
	const size = 64 << 20
	vmSlots <- struct{}{}
	vmSlots <- struct{}{}
	defer func() { <-vmSlots; <-vmSlots }()
	assetsMu.Lock()
	out, err := exec.Command(bin, "lab", "up", "-blades", "2", "-disk-mib", "64", "-dir", dir, "-cache", cacheDir()).CombinedOutput()
	assetsMu.Unlock()
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	c, err := lab.LoadChassis(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			for _, f := range []string{"imaged.log", "console/ms1-c1n1.log", "console/ms1-c1n2.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
					t.Logf("--- %s (last 50 lines)\n%s", f, tail(b, 50))
				}
			}
		}
		exec.Command(bin, "lab", "down", "-dir", dir).Run()
	}()
	ctl := newControl(t, c)

	// Three bootable images from one kernel and initramfs (whose /init is imaged-labos-init: the
	// cmdline selects its os mode), differing only in a kernel parameter.
	deb, err := initrd.DownloadKernel(context.Background(), cacheDir())
	if err != nil {
		t.Fatal(err)
	}
	osBoot := t.TempDir()
	if _, err := initrd.Build(context.Background(), initrd.Options{Binary: lab.Beside(bin, lab.OSInitProgram), Modules: initrd.ModuleSource{Deb: deb},
		ModuleNames: labos.DefaultModules, Compression: "zstd", Output: filepath.Join(osBoot, "initrd.img"), KernelOut: filepath.Join(osBoot, "vmlinuz")}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(lab.BaseURL())
	build := func(name string) labos.Result {
		r, err := labos.Build(context.Background(), labos.BuildOptions{Output: filepath.Join(t.TempDir(), name+".raw"), Size: size, URL: u,
			Kernel: filepath.Join(osBoot, "vmlinuz"), Initrd: filepath.Join(osBoot, "initrd.img"), ExtraArgs: []string{"imaged.build=" + name}})
		if err != nil {
			t.Fatalf("build %s: %v", name, err)
		}
		return r
	}
	imgs := map[string]labos.Result{"1": build("one"), "2": build("two"), "3": build("three")}
	cfg := filepath.Join(dir, "imaged.yaml")
	for v, r := range imgs {
		if out, err := exec.Command(bin, "image", "import", "-config", cfg, "labos@"+v, r.Path).CombinedOutput(); err != nil {
			t.Fatalf("import: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command(bin, "image", "promote", "-config", cfg, "labos@1", "stable").CombinedOutput(); err != nil {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	blades := []string{"ms1-c1n1", "ms1-c1n2"}
	disk := func(id string) string { return filepath.Join(dir, "disks", id+".raw") }

	// 1. Both blades at once, through the API.
	start := time.Now()
	ids := map[string]string{}
	for _, id := range blades {
		var j jobs.Job
		if err := ctl.do("POST", "/api/v1/machines/"+id+"/reimage", api.ReimageRequest{Image: "labos@stable"}, &j); err != nil {
			t.Fatalf("reimage %s: %v", id, err)
		}
		ids[id] = j.ID
	}
	var wg sync.WaitGroup
	done := map[string]jobs.Job{}
	var mu sync.Mutex
	for _, id := range blades {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := ctl.waitJob(ids[id], 8*time.Minute, nil)
			mu.Lock()
			done[id] = j
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, id := range blades {
		j := done[id]
		t.Logf("%s: job %s %s in %.0f s\n%s", id, j.ID, j.State, j.Updated.Sub(start).Seconds(), jobText(j))
		if j.State != jobs.StateSucceeded {
			t.Fatalf("%s: job %s %s in %s: %s", id, j.ID, j.State, j.Phase, j.Reason)
		}
		var m api.MachineView
		ctl.do("GET", "/api/v1/machines/"+id, nil, &m)
		if m.CurrentImage != imgs["1"].Digest || m.Stale {
			t.Errorf("%s: current image %q stale %v, want %s", id, m.CurrentImage, m.Stale, imgs["1"].Digest)
		}
		if got := sha256File(t, disk(id), size); got != imgs["1"].Digest.String() {
			t.Errorf("%s: the disk file's SHA-256 is %s, the image's digest %s", id, got, imgs["1"].Digest)
		}
	}

	// 2. A corrupted blob: the agent refuses the block, the job fails, nothing is recorded,
	// the machine is left off, and block 0 still holds the old image's.
	bad := imgs["2"]
	blob := filepath.Join(dir, "state", "images", "blobs", "sha256", bad.Digest.Hex())
	blk := firstDataBlock(t, bad.Path, 2)
	flipByte(t, blob, int64(blk)*images.BlockSize+100)
	var j jobs.Job
	if err := ctl.do("POST", "/api/v1/machines/ms1-c1n1/reimage", api.ReimageRequest{Image: "labos@2"}, &j); err != nil {
		t.Fatal(err)
	}
	j = ctl.waitJob(j.ID, 6*time.Minute, nil)
	t.Logf("corrupted blob: job %s %s in %s: %s\n%s", j.ID, j.State, j.Phase, j.Reason, jobText(j))
	if j.State != jobs.StateFailed || j.Phase != jobs.PhaseVerifying || !strings.Contains(j.Reason, fmt.Sprint(blk)) {
		t.Errorf("corrupted blob: job %s in %s (%s), want failed at verifying naming block %d", j.State, j.Phase, j.Reason, blk)
	}
	var m api.MachineView
	ctl.do("GET", "/api/v1/machines/ms1-c1n1", nil, &m)
	if m.CurrentImage == bad.Digest || m.Power != "Off" {
		t.Errorf("after the failed write: current image %q, power %q; want not %s, and Off", m.CurrentImage, m.Power, bad.Digest)
	}
	if !bytes.Equal(readBlock(t, disk("ms1-c1n1"), 0), readBlock(t, imgs["1"].Path, 0)) {
		t.Error("block 0 of the disk changed although the write failed")
	}

	// 3. imaged killed (SIGKILL) while the blade writes, and started again: the job goes on.
	if err := ctl.do("POST", "/api/v1/machines/ms1-c1n2/reimage", api.ReimageRequest{Image: "labos@3"}, &j); err != nil {
		t.Fatal(err)
	}
	j = ctl.waitJob(j.ID, 4*time.Minute, func(j jobs.Job) bool { return j.Phase == jobs.PhaseWriting })
	if j.State.Done() {
		t.Fatalf("the job ended before it wrote: %s %s", j.State, j.Reason)
	}
	if err := c.KillDaemon(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed imaged in phase %s; starting it again", j.Phase)
	if err := c.StartDaemon(context.Background()); err != nil {
		t.Fatal(err)
	}
	j = ctl.waitJob(j.ID, 6*time.Minute, nil)
	t.Logf("after the crash: job %s %s\n%s", j.ID, j.State, jobText(j))
	if j.State != jobs.StateSucceeded {
		t.Fatalf("job after the crash: %s in %s: %s", j.State, j.Phase, j.Reason)
	}
	if got := sha256File(t, disk("ms1-c1n2"), size); got != imgs["3"].Digest.String() {
		t.Errorf("ms1-c1n2: disk %s, want %s", got, imgs["3"].Digest)
	}
}

// firstDataBlock is the first 512 KiB block at or after from that is not all zero.
func firstDataBlock(t *testing.T, path string, from int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, images.BlockSize)
	for i := from; ; i++ {
		n, err := f.ReadAt(buf, int64(i)*images.BlockSize)
		if n == 0 {
			t.Fatalf("no data block after %d: %v", from, err)
		}
		for _, b := range buf[:n] {
			if b != 0 {
				return i
			}
		}
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func readBlock(t *testing.T, path string, i int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, images.BlockSize)
	f.ReadAt(b, int64(i)*images.BlockSize)
	return b
}
