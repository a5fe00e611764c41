// Command reimage-bench measures the lab reimage per phase: imaged's main job (lab.Story: a
// virtual chassis, a bootable image, every blade reimaged through the API and proven by its
// booted OS) with 1 blade and then 2 at once, RUNS times each, and prints, per phase, the median
// seconds, then the API call to ready. Run it with bench/reimage/run.sh (root, QEMU).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reimage-bench:", err)
		os.Exit(1)
	}
}

var phases = []jobs.Phase{jobs.PhaseQueued, jobs.PhaseFencing, jobs.PhaseBootSet, jobs.PhasePoweringOn, jobs.PhaseNetbooting,
	jobs.PhaseWriting, jobs.PhaseVerifying, jobs.PhaseRebooting, jobs.PhaseBootingOS, jobs.PhaseReady}

func run(ctx context.Context) error {
	imaged := flag.String("imaged", "", "the imaged binary (imaged-agent and imaged-labos-init beside it)")
	dir := flag.String("dir", "/var/tmp/imaged-reimage-bench", "the chassis directory (removed after each run)")
	cache := flag.String("cache", "/var/cache/imaged-lab", "Debian's kernel package cache")
	runs := flag.Int("runs", 3, "runs per blade count")
	flag.Parse()
	if *imaged == "" {
		return fmt.Errorf("-imaged is required")
	}
	// seconds[blades][phase] and total[blades] over every job of every run.
	seconds := map[int]map[jobs.Phase][]float64{}
	total := map[int][]float64{}
	for _, n := range []int{1, 2} {
		seconds[n] = map[jobs.Phase][]float64{}
		for r := range *runs {
			fmt.Fprintf(os.Stderr, "%s  %d blade(s), run %d of %d\n", time.Now().Format("15:04:05"), n, r+1, *runs)
			js, err := lab.Story(ctx, lab.StoryOptions{Dir: *dir, CacheDir: *cache, Imaged: *imaged, Blades: n}, io.Discard)
			lab.ChassisDown(*dir, io.Discard)
			if err != nil {
				return err
			}
			for _, j := range js {
				for _, p := range j.Phases {
					if !p.End.IsZero() {
						seconds[n][p.Phase] = append(seconds[n][p.Phase], p.End.Sub(p.Start).Seconds())
					}
				}
				total[n] = append(total[n], j.Updated.Sub(j.Created).Seconds())
			}
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\t1 blade (s, median)\t2 blades at once (s, median)\t")
	for _, p := range phases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", p, med(seconds[1][p]), med(seconds[2][p]))
	}
	fmt.Fprintf(tw, "API call → ready\t%s\t%s\t\n", med(total[1]), med(total[2]))
	fmt.Fprintf(tw, "jobs measured\t%d\t%d\t\n", len(total[1]), len(total[2]))
	return tw.Flush()
}

func med(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return fmt.Sprintf("%.1f", s[len(s)/2])
}
