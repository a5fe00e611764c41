package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/initrd"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/lab/labos"
)

// StoryOptions configure Story.
type StoryOptions struct {
	Dir      string // the chassis's directory (a chassis left there by an earlier story is taken down)
	CacheDir string
	Imaged   string // the static imaged binary; imaged-agent and imaged-labos-init beside it
	Blades   int    // default 2
}

// Story is imaged's main job on the virtual chassis, end to end: a chassis of blades behind a
// Redfish BMC, a bootable image built from Debian's kernel and imported into the catalog, every
// blade reimaged through the API at once (BMC power and one-time PXE, netboot, the agent's
// verified write, the reboot into the disk, the booted OS checking in with the digest of its own
// disk), and each job's timeline. The chassis and its API stay up for a person to explore.
func Story(ctx context.Context, o StoryOptions, out io.Writer) ([]jobs.Job, error) {
	if o.Blades == 0 {
		o.Blades = 2
	}
	if _, err := LoadChassis(o.Dir); err == nil {
		fmt.Fprintf(out, "lab: taking down the chassis left in %s by an earlier run\n", o.Dir)
		if err := ChassisDown(o.Dir, io.Discard); err != nil {
			return nil, err
		}
	}
	const size = 64 << 20
	c, err := ChassisUp(ctx, ChassisOptions{Dir: o.Dir, CacheDir: o.CacheDir, Imaged: o.Imaged, Blades: o.Blades, DiskMiB: size >> 20}, out)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "lab: chassis up: %d blades, powered off, behind the Redfish BMC at %s; imaged serves at %s and %s\n", len(c.Blades), c.BMCURL, BaseURL(), HTTPSURL())

	// The image's initramfs runs imaged-labos-init, from the kernel package the chassis's
	// agent initramfs came from (in the cache: no download).
	deb, err := initrd.DownloadKernel(ctx, o.CacheDir)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(BaseURL())
	img, err := labos.Build(ctx, labos.BuildOptions{Output: filepath.Join(o.Dir, "labos-1.raw"), Size: size, URL: u,
		Binary: Beside(o.Imaged, OSInitProgram), KernelDeb: deb})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "lab: built a bootable image (MBR, SYSLINUX, Debian's kernel; its init hashes its disk and checks in): %s, %s\n", img.Path, img.Digest)
	for _, args := range [][]string{
		{"image", "import", "-config", c.Config, "labos@1", img.Path},
		{"image", "promote", "-config", c.Config, "labos@1", "stable"},
	} {
		cmd := exec.CommandContext(ctx, o.Imaged, args...)
		cmd.Stdout, cmd.Stderr = out, out
		fmt.Fprintf(out, "$ imaged %s\n", joinArgs(args))
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("lab: imaged %s: %w", args[0]+" "+args[1], err)
		}
	}

	ctl := api.NewControlClient(c.ControlSocket(), "lab demo")
	start := time.Now()
	ids := map[string]string{}
	for _, b := range c.Blades {
		j, err := ctl.Reimage(ctx, b.ID, api.ReimageRequest{Image: "labos@stable"})
		if err != nil {
			return nil, err
		}
		ids[b.ID] = j.ID
		fmt.Fprintf(out, "lab: POST /api/v1/machines/%s/reimage {\"image\": \"labos@stable\"} → job %s\n", b.ID, j.ID)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	final := map[string]jobs.Job{}
	var errs []error
	for id, jid := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := ""
			for {
				j, err := ctl.Job(ctx, jid)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if now := string(j.Phase); now != last {
					mu.Lock()
					fmt.Fprintf(out, "  %+6.1fs  %s  %s\n", time.Since(start).Seconds(), id, now)
					mu.Unlock()
					last = now
				}
				if j.State.Done() {
					mu.Lock()
					final[id] = j
					mu.Unlock()
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	failed := 0
	var all []jobs.Job
	for _, b := range c.Blades {
		j := final[b.ID]
		all = append(all, j)
		fmt.Fprintf(out, "\nlab: %s: job %s %s", b.ID, j.ID, j.State)
		if j.Reason != "" {
			fmt.Fprintf(out, " in %s: %s", j.Phase, j.Reason)
		}
		fmt.Fprintln(out)
		printPhases(out, j)
		if m, err := ctl.Machine(ctx, b.ID); err == nil {
			fmt.Fprintf(out, "  current image %s (assigned %s), power %s, stale %v\n", m.CurrentImage, m.AssignedImage, m.Power, m.Stale)
		}
		if j.State != jobs.StateSucceeded {
			failed++
		}
	}
	fmt.Fprintf(out, `
lab: the chassis stays up. Explore:
  curl -s --unix-socket %[1]s http://imaged/api/v1/machines
  curl -s --unix-socket %[1]s http://imaged/api/v1/jobs
  curl -sN --unix-socket %[1]s http://imaged/api/v1/events        (live events)
  imaged machines reimage -config %[2]s -wait %[3]s labos@stable
  imaged bmc inventory -config %[2]s ms1
  consoles: %[4]s
  imaged lab down -dir %[5]s                                          (removes it all)
`, c.ControlSocket(), c.Config, c.Blades[0].ID, filepath.Join(o.Dir, "console"), o.Dir)
	if failed > 0 {
		return all, fmt.Errorf("lab: %d of %d reimages did not succeed", failed, len(c.Blades))
	}
	return all, nil
}

func printPhases(w io.Writer, j jobs.Job) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PHASE\tSECONDS")
	for _, p := range j.Phases {
		secs := "-"
		if !p.End.IsZero() {
			secs = fmt.Sprintf("%.1f", p.End.Sub(p.Start).Seconds())
		}
		fmt.Fprintf(tw, "  %s\t%s\n", p.Phase, secs)
	}
	tw.Flush()
}

func joinArgs(a []string) string { return strings.Join(a, " ") }
