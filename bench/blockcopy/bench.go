package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/imaged/imaged/bench/internal/benchtab"
	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/blockcopy"
)

// env is one bench run: the image, the two servers, and the processes to stop.
type env struct {
	dir, self string
	m         *images.Manifest
	etag      string
	imaged    string // the imaged binary
	goURL     string // imaged serve's GET /images/{digest}/blob
	ngxURL    string // nginx, sendfile on
	stderr    io.Writer
	stops     []func()
}

// proc is one measured child process.
type proc struct {
	wall time.Duration
	ru   syscall.Rusage
	out  []byte
}

func (r proc) cpu() time.Duration {
	return time.Duration(r.ru.Utime.Nano() + r.ru.Stime.Nano())
}

func (e *env) log(format string, args ...any) {
	fmt.Fprintf(e.stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// measure runs commands at once and returns each one's wall time (from the common start),
// rusage and stdout.
func (e *env) measure(ctx context.Context, argvs ...[]string) ([]proc, time.Duration, error) {
	cmds := make([]*exec.Cmd, len(argvs))
	outs := make([]*bytes.Buffer, len(argvs))
	var errb bytes.Buffer
	for i, argv := range argvs {
		cmds[i] = command(ctx, argv[0], argv[1:]...)
		outs[i] = new(bytes.Buffer)
		cmds[i].Stdout, cmds[i].Stderr = outs[i], &errb
	}
	start := time.Now()
	for i, c := range cmds {
		if err := c.Start(); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", argvs[i][0], err)
		}
	}
	runs := make([]proc, len(cmds))
	var firstErr error
	for i, c := range cmds {
		err := c.Wait()
		runs[i] = proc{wall: time.Since(start), out: outs[i].Bytes()}
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			runs[i].ru = *ru
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s: %w: %s %s", strings.Join(argvs[i], " "), err, outs[i].Bytes(), errb.Bytes())
		}
	}
	return runs, time.Since(start), firstErr
}

func (e *env) clean(paths ...string) {
	for _, p := range paths {
		os.Remove(p)
	}
	// One row's writeback, and the discards ext4 (mounted -o discard) issues for the files just
	// removed, must not land in the next row's time.
	exec.Command("sync").Run()
	time.Sleep(time.Second)
}

// verify proves an output is the image (read back from the file, hashed per block).
func (e *env) verify(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := blockcopy.Verify(ctx, f, e.m, 0); err != nil {
		return fmt.Errorf("%s is not the image: %w", path, err)
	}
	return nil
}

func (e *env) copyArgv(url, out string, extra ...string) []string {
	return append([]string{e.self, "copy", "-url", url, "-etag", e.etag, "-manifest", filepath.Join(e.dir, "img.manifest"), "-out", out}, extra...)
}

func parseResult(b []byte) (copyResult, error) {
	var r copyResult
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("copy printed %q: %w", b, err)
	}
	if r.Error != "" {
		return r, errors.New(r.Error)
	}
	return r, nil
}

func bench(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	dir := fs.String("dir", "", "work directory (2 GiB image, outputs up to clients × size)")
	size := fs.Int64("size", 2<<30, "image size")
	runs := fs.Int("runs", 3, "runs per row of part 1 (median)")
	clients := fs.Int("clients", 8, "concurrent clients in part 3")
	loop := fs.Bool("loop", true, "measure O_DIRECT on a loop device too (root)")
	imaged := fs.String("imaged", "", "the imaged binary that serves the image (imaged serve)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *imaged == "" {
		return errors.New("-imaged: the imaged binary is needed (run.sh builds it)")
	}
	e := &env{dir: *dir, self: self, imaged: *imaged, stderr: stderr}
	defer func() {
		for i := len(e.stops) - 1; i >= 0; i-- {
			e.stops[i]()
		}
	}()
	benchStart := time.Now()
	load, _ := os.ReadFile("/proc/loadavg")

	e.log("generating a %d-byte image", *size)
	www := filepath.Join(e.dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return err
	}
	if e.m, err = gen(www, *size, 1); err != nil {
		return err
	}
	exec.Command("sync").Run()
	img := filepath.Join(www, "img")
	os.Rename(filepath.Join(www, "img.manifest"), filepath.Join(e.dir, "img.manifest"))
	e.etag = `"` + e.m.Digest.String() + `"`
	nzBlocks, nzBytes := e.m.NonZero()
	bmap := filepath.Join(e.dir, "img.bmap")
	if out, err := exec.CommandContext(ctx, "bmaptool", "create", "-o", bmap, img).CombinedOutput(); err != nil {
		return fmt.Errorf("bmaptool create: %v: %s", err, out)
	}
	if err := e.startServers(ctx, img); err != nil {
		return err
	}

	t := newTable()
	t.Add("image", fmt.Sprintf("%d MiB, %d of %d blocks non-zero (%d MiB)", *size>>20, nzBlocks, len(e.m.Blocks), nzBytes>>20), "", "", "")

	// Part 1: one 2 GiB image onto a new file, side by side, alternating run by run.
	e.log("part 1: blockcopy vs bmaptool vs curl|tee(sha256sum), %d runs", *runs)
	out := filepath.Join(e.dir, "out")
	var wBC, wBmap, wCurl []time.Duration
	var bc4 copyResult
	var bc4run proc
	for i := range *runs {
		e.clean(out)
		r, _, err := e.measure(ctx, e.copyArgv(e.goURL, out, "-zeroed"))
		if err != nil {
			return err
		}
		if bc4, err = parseResult(r[0].out); err != nil {
			return err
		}
		if r[0].ru.Maxrss > bc4run.ru.Maxrss {
			bc4run = r[0]
		}
		wBC = append(wBC, r[0].wall)
		if i == 0 {
			if err := e.verify(ctx, out); err != nil {
				return err
			}
		}
		e.clean(out)
		r, _, err = e.measure(ctx, []string{"bmaptool", "-q", "copy", "--bmap", bmap, e.goURL, out})
		if err != nil {
			return err
		}
		wBmap = append(wBmap, r[0].wall)
		if i == 0 {
			if err := e.verify(ctx, out); err != nil {
				return err
			}
		}
		if i > 0 {
			continue // 10× slower than the others: one run is enough, and saves a minute
		}
		e.clean(out)
		sum := filepath.Join(e.dir, "sum")
		r, _, err = e.measure(ctx, []string{"bash", "-c", fmt.Sprintf(`set -e; curl -sf %s | tee >(sha256sum >%s) >%s; wait $!; sync %s`, e.goURL, sum, out, out)})
		if err != nil {
			return err
		}
		wCurl = append(wCurl, r[0].wall)
		if got, _ := os.ReadFile(sum); !strings.HasPrefix(string(got), e.m.Digest.Hex()) {
			return fmt.Errorf("curl|tee: sha256sum says %q, the image is %s", got, e.m.Digest)
		}
	}
	e.clean(out)
	bcW, bmW, cuW := benchtab.Median(wBC), benchtab.Median(wBmap), benchtab.Median(wCurl)
	t.Add("1. 2 GiB image → new file, wall (median)",
		fmt.Sprintf("%.2f s  blockcopy, 4 conns", bcW.Seconds()),
		fmt.Sprintf("%.2f s  bmaptool copy --bmap", bmW.Seconds()),
		fmt.Sprintf("≤ %.2f s (2/3 bmaptool)", bmW.Seconds()*2/3), benchtab.Met(bcW.Seconds() <= bmW.Seconds()*2/3))
	t.Add("", fmt.Sprintf("runs: %s", benchtab.Secs(wBC)), fmt.Sprintf("%.2f s  curl | tee >(sha256sum), + sync (1 run)", cuW.Seconds()), "", "")
	t.Add("", "", fmt.Sprintf("runs: bmaptool %s; curl %s", benchtab.Secs(wBmap), benchtab.Secs(wCurl)), "", "")

	// Part 2: single stream (one connection), verified write rate, against one core of
	// sha256sum and the disk's O_DIRECT write rate; then with the network and the disk taken out
	// (the image read from a local file, writes dropped), where only hashing limits.
	e.log("part 2: single stream vs sha256sum vs dd")
	bc1, bc1run, err := e.copyRuns(ctx, *runs, e.goURL, out, "-workers", "1")
	if err != nil {
		return err
	}
	r, _, err := e.measure(ctx, []string{"sha256sum", img})
	if err != nil {
		return err
	}
	shaRate := mbps(*size, r[0].wall)
	r, _, err = e.measure(ctx, []string{"openssl", "dgst", "-sha256", img})
	if err != nil {
		return err
	}
	osslRate := mbps(*size, r[0].wall)
	ddOut := filepath.Join(e.dir, "dd")
	r, _, err = e.measure(ctx, []string{"dd", "if=/dev/zero", "of=" + ddOut, "bs=4M", fmt.Sprint("count=", *size>>22), "oflag=direct", "conv=fsync", "status=none"})
	if err != nil {
		return err
	}
	ddRate := mbps(*size>>22<<22, r[0].wall)
	e.clean(ddOut)
	bcNull, bcNullRun, err := e.copyRuns(ctx, *runs, "file:"+img, "null", "-workers", "1")
	if err != nil {
		return err
	}
	bc1Rate := mbps(nzBytes, bc1run.wall)
	lower := min(shaRate, ddRate)
	hashCores := func(r copyResult) float64 { return r.HashTime.Seconds() / r.Duration.Seconds() }
	t.Add("2. single stream (1 conn), verified write",
		fmt.Sprintf("%.0f MB/s data (%.0f MB/s image)", bc1Rate, mbps(*size, bc1run.wall)),
		fmt.Sprintf("%.0f sha256sum (1 core), %.0f dd oflag=direct", shaRate, ddRate),
		fmt.Sprintf("≥ %.0f (90%% of lower)", 0.9*lower), benchtab.Met(bc1Rate >= 0.9*lower))
	cpu := func(r copyResult, p proc) float64 { return p.cpu().Seconds() / r.Duration.Seconds() }
	t.Add("   cores: hashing (HashTime/wall), CPU/wall",
		fmt.Sprintf("%.2f hashing, %.2f CPU, max %d at once", hashCores(bc1), cpu(bc1, bc1run), bc1.MaxHashing),
		fmt.Sprintf("(openssl dgst -sha256: %.0f MB/s, 1 core SHA-NI)", osslRate), "", "")
	t.Add("   network+disk out: file src → no-op target",
		fmt.Sprintf("%.0f MB/s data, %.2f hashing, %.2f CPU", mbps(nzBytes, bcNull.Duration), hashCores(bcNull), cpu(bcNull, bcNullRun)),
		"", "> 1 core hashing", benchtab.Met(hashCores(bcNull) > 1 && cpu(bcNull, bcNullRun) > 1.2))

	// Part 3: clients at once.
	e.log("part 3: %d blockcopy agents vs %d curl from nginx", *clients, *clients)
	var argvs [][]string
	var outs []string
	for i := range *clients {
		o := filepath.Join(e.dir, fmt.Sprintf("out%d", i))
		outs = append(outs, o)
		argvs = append(argvs, e.copyArgv(e.goURL, o, "-zeroed"))
	}
	rs, wall, err := e.measure(ctx, argvs...)
	if err != nil {
		return err
	}
	var wire int64
	var rss int64
	for _, r := range rs {
		res, err := parseResult(r.out)
		if err != nil {
			return err
		}
		wire += res.BytesFetched
		rss = max(rss, r.ru.Maxrss)
	}
	if err := e.verify(ctx, outs[len(outs)-1]); err != nil {
		return err
	}
	e.clean(outs...)
	bcAgg := mbps(int64(*clients)**size, wall)
	argvs = argvs[:0]
	for _, o := range outs {
		argvs = append(argvs, []string{"bash", "-c", fmt.Sprintf("set -e; curl -sf -o %s %s; sync %s", o, e.ngxURL, o)})
	}
	_, nwall, err := e.measure(ctx, argvs...)
	if err != nil {
		return err
	}
	if err := e.verify(ctx, outs[0]); err != nil {
		return err
	}
	e.clean(outs...)
	ngAgg := mbps(int64(*clients)**size, nwall)
	t.Add(fmt.Sprintf("3. %d clients → %d files, aggregate", *clients, *clients),
		fmt.Sprintf("%.0f MB/s image (%.2f s; %.0f MB/s on the wire)", bcAgg, wall.Seconds(), mbps(wire, wall)),
		fmt.Sprintf("%.0f MB/s  curl from nginx, + sync (%.2f s)", ngAgg, nwall.Seconds()),
		fmt.Sprintf("≥ %.0f (90%% nginx)", 0.9*ngAgg), benchtab.Met(bcAgg >= 0.9*ngAgg))
	// The servers alone: the same clients (curl) pulling the whole blob to /dev/null, the two
	// servers alternating run by run (the median of each, so that a burst of other load on this
	// 2-core machine does not decide the row).
	srvRuns := [2][]float64{}
	for range *runs {
		for i, u := range []string{e.goURL, e.ngxURL} {
			argvs = argvs[:0]
			for range *clients {
				argvs = append(argvs, []string{"curl", "-sf", "-o", "/dev/null", u})
			}
			_, w, err := e.measure(ctx, argvs...)
			if err != nil {
				return err
			}
			srvRuns[i] = append(srvRuns[i], mbps(int64(*clients)**size, w))
		}
	}
	srvRates := []float64{benchtab.Median(srvRuns[0]), benchtab.Median(srvRuns[1])}
	t.Add(fmt.Sprintf("   servers only: %d curl → /dev/null (median)", *clients),
		fmt.Sprintf("%.0f MB/s  imaged serve", srvRates[0]),
		fmt.Sprintf("%.0f MB/s  nginx sendfile", srvRates[1]),
		fmt.Sprintf("≥ %.0f (90%% nginx)", 0.9*srvRates[1]), benchtab.Met(srvRates[0] >= 0.9*srvRates[1]))
	t.Add("", fmt.Sprintf("runs: %s", joinf(srvRuns[0])), fmt.Sprintf("runs: %s", joinf(srvRuns[1])), "", "")

	// Part 4: memory.
	t.Add("4. agent peak RSS writing 2 GiB", fmt.Sprintf("%.1f MiB (4 conns); %.1f MiB (1 conn)", float64(bc4run.ru.Maxrss)/1024, float64(bc1run.ru.Maxrss)/1024),
		fmt.Sprintf("max of %d agents: %.1f MiB", *clients, float64(rss)/1024), "< 128 MiB", benchtab.Met(bc4run.ru.Maxrss < 128<<10 && rss < 128<<10))

	// Part 5: O_DIRECT or the page cache, on a file and on a loop device.
	e.log("part 5: O_DIRECT vs buffered")
	_, bcOff, err := e.copyRuns(ctx, *runs, e.goURL, out, "-direct", "off")
	if err != nil {
		return err
	}
	t.Add("5. O_DIRECT on a file (ext4 on virtio)", fmt.Sprintf("%.2f s  O_DIRECT (part 1, Direct=%v)", bcW.Seconds(), bc4.Direct), fmt.Sprintf("%.2f s  page cache + fsync (median)", bcOff.wall.Seconds()), "", "")
	if *loop {
		lw := map[string][]time.Duration{}
	loop:
		for i := range *runs {
			for _, mode := range []string{"on", "off"} {
				w, err := e.loopCopy(ctx, mode, i == 0)
				if err != nil {
					e.log("loop device: %v", err)
					break loop
				}
				lw[mode] = append(lw[mode], w)
			}
		}
		if len(lw["off"]) == *runs {
			t.Add("   O_DIRECT on a loop device (median)", fmt.Sprintf("%.2f s  O_DIRECT", benchtab.Median(lw["on"]).Seconds()), fmt.Sprintf("%.2f s  page cache + fsync", benchtab.Median(lw["off"]).Seconds()), "", "")
		}
	}

	fmt.Fprintf(stdout, "load average before: %s", load)
	t.Print(stdout)
	fmt.Fprintf(stdout, "(image served over 127.0.0.1 by `imaged serve`, GET /images/{digest}/blob from its blob store after `imaged image import`; nginx %s only in part 3; bench took %.0f s)\n",
		strings.TrimPrefix(strings.TrimSpace(versionOf("nginx", "-v")), "nginx version: "), time.Since(benchStart).Seconds())
	return nil
}

// copyRuns runs one agent n times onto out (a new file each time, or null), verifies the first
// output, and returns the run of median wall time.
func (e *env) copyRuns(ctx context.Context, n int, url, out string, extra ...string) (copyResult, proc, error) {
	type one struct {
		res copyResult
		p   proc
	}
	var all []one
	for i := range n {
		if out != "null" {
			e.clean(out)
		}
		r, _, err := e.measure(ctx, e.copyArgv(url, out, append([]string{"-zeroed"}, extra...)...))
		if err != nil {
			return copyResult{}, proc{}, err
		}
		res, err := parseResult(r[0].out)
		if err != nil {
			return copyResult{}, proc{}, err
		}
		if i == 0 && out != "null" {
			if err := e.verify(ctx, out); err != nil {
				return copyResult{}, proc{}, err
			}
		}
		all = append(all, one{res, r[0]})
	}
	if out != "null" {
		e.clean(out)
	}
	slices.SortFunc(all, func(a, b one) int { return int(a.p.wall - b.p.wall) })
	m := all[len(all)/2]
	return m.res, m.p, nil
}
