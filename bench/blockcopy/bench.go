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

// env is one bench run: the image, the servers, and the processes to stop.
type env struct {
	dir, self string
	m         *images.Manifest
	etag      string
	imagedBin string // the imaged binary
	imaged    server // imaged serve's GET /images/{digest}/blob, plain HTTP (http.tls off)
	imagedTLS server // the same over HTTPS, as shipped (its own certificate, pinned)
	ngx       server // nginx, sendfile on
	ngxTLS    server // nginx, ssl (user-space TLS: no sendfile)
	stderr    io.Writer
	stops     []func()
}

// proc is one measured child process.
type proc struct {
	wall time.Duration
	ru   syscall.Rusage
	out  []byte
	srv  time.Duration // CPU the server used meanwhile (copyRuns)
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

// copyArgv is one agent copying from s (the agent's pinned client over https) onto out.
func (e *env) copyArgv(s server, out string, extra ...string) []string {
	argv := []string{e.self, "copy", "-url", s.url, "-etag", e.etag, "-manifest", filepath.Join(e.dir, "img.manifest"), "-out", out}
	if s.pin != "" {
		argv = append(argv, "-pin", s.pin)
	}
	return append(argv, extra...)
}

// bmaptool is bmaptool copy from s onto out (over https trusting s's certificate: Python's
// default context reads SSL_CERT_FILE).
func (e *env) bmaptool(s server, bmap, out string) []string {
	argv := []string{"bmaptool", "-q", "copy", "--bmap", bmap, s.url, out}
	if s.ca != "" {
		argv = append([]string{"env", "SSL_CERT_FILE=" + s.ca}, argv...)
	}
	return argv
}

// onServer runs f and returns the CPU time s's processes used meanwhile (0 with no process: a
// file source).
func onServer(s server, f func() error) (time.Duration, error) {
	if s.pid == 0 {
		return 0, f()
	}
	before, err := cpuOf(s.pid)
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := cpuOf(s.pid)
	return after - before, err
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
	e := &env{dir: *dir, self: self, imagedBin: *imaged, stderr: stderr}
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
	e.log("a wrong pin must be refused (imaged logs the handshake the client breaks off)")
	if err := e.checkPin(ctx); err != nil {
		return err
	}

	t := newTable()
	t.Add("image", fmt.Sprintf("%d MiB, %d of %d blocks non-zero (%d MiB)", *size>>20, nzBlocks, len(e.m.Blocks), nzBytes>>20), "", "", "")

	// Part 1: one 2 GiB image onto a new file, side by side, alternating run by run; then the
	// same over HTTPS, blockcopy with the agent's pinned client, bmaptool trusting the certificate.
	e.log("part 1: blockcopy vs bmaptool vs curl|tee(sha256sum), plain and HTTPS, %d runs", *runs)
	out := filepath.Join(e.dir, "out")
	var wBC, wBmap, wCurl, wBCTLS, wBmapTLS []time.Duration
	var bc4, bc4TLS copyResult
	var bc4run proc
	// one runs argv onto out, verifies the first run's output, and appends its wall time.
	one := func(i int, argv []string, walls *[]time.Duration) (proc, error) {
		e.clean(out)
		r, _, err := e.measure(ctx, argv)
		if err != nil {
			return proc{}, err
		}
		*walls = append(*walls, r[0].wall)
		if i == 0 {
			return r[0], e.verify(ctx, out)
		}
		return r[0], nil
	}
	for i := range *runs {
		p, err := one(i, e.copyArgv(e.imaged, out, "-zeroed"), &wBC)
		if err != nil {
			return err
		}
		if bc4, err = parseResult(p.out); err != nil {
			return err
		}
		if p.ru.Maxrss > bc4run.ru.Maxrss {
			bc4run = p
		}
		if _, err := one(i, e.bmaptool(e.imaged, bmap, out), &wBmap); err != nil {
			return err
		}
		if p, err = one(i, e.copyArgv(e.imagedTLS, out, "-zeroed"), &wBCTLS); err != nil {
			return err
		}
		if bc4TLS, err = parseResult(p.out); err != nil {
			return err
		}
		if _, err := one(i, e.bmaptool(e.imagedTLS, bmap, out), &wBmapTLS); err != nil {
			return err
		}
		if i > 0 {
			continue // 10× slower than the others: one run is enough, and saves a minute
		}
		e.clean(out)
		sum := filepath.Join(e.dir, "sum")
		r, _, err := e.measure(ctx, []string{"bash", "-c", fmt.Sprintf(`set -e; curl -sf %s | tee >(sha256sum >%s) >%s; wait $!; sync %s`, e.imaged.url, sum, out, out)})
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
	bcTW, bmTW := benchtab.Median(wBCTLS), benchtab.Median(wBmapTLS)
	t.Add("   over HTTPS (blockcopy pinned as the agent)",
		fmt.Sprintf("%.2f s  blockcopy, 4 conns (%s of plain)", bcTW.Seconds(), benchtab.Of(bcTW.Seconds(), bcW.Seconds())),
		fmt.Sprintf("%.2f s  bmaptool copy --bmap, HTTPS", bmTW.Seconds()),
		fmt.Sprintf("≤ %.2f s (2/3 bmaptool)", bmTW.Seconds()*2/3), benchtab.Met(bcTW.Seconds() <= bmTW.Seconds()*2/3))
	t.Add("", fmt.Sprintf("runs: %s; %s", benchtab.Secs(wBCTLS), bc4TLS.TLS), fmt.Sprintf("runs: %s", benchtab.Secs(wBmapTLS)), "", "")

	// Part 2: single stream (one connection), verified write rate, against one core of
	// sha256sum and the disk's O_DIRECT write rate, in plain HTTP and over HTTPS, with the CPU
	// each side spends per GB of data; then with the network and the disk taken out (the image
	// read from a local file, writes dropped), where only hashing limits.
	e.log("part 2: single stream, plain and HTTPS, vs sha256sum vs dd")
	bc1, bc1run, err := e.copyRuns(ctx, *runs, e.imaged, out, "-workers", "1")
	if err != nil {
		return err
	}
	bc1TLS, bc1TLSrun, err := e.copyRuns(ctx, *runs, e.imagedTLS, out, "-workers", "1")
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
	bcNull, bcNullRun, err := e.copyRuns(ctx, *runs, server{url: "file:" + img}, "null", "-workers", "1")
	if err != nil {
		return err
	}
	bc1Rate, bc1TLSRate := mbps(nzBytes, bc1run.wall), mbps(nzBytes, bc1TLSrun.wall)
	lower := min(shaRate, ddRate)
	hashCores := func(r copyResult) float64 { return r.HashTime.Seconds() / r.Duration.Seconds() }
	cpu := func(r copyResult, p proc) float64 { return p.cpu().Seconds() / r.Duration.Seconds() }
	perGB := func(p proc) string {
		return fmt.Sprintf("agent %s, imaged %s", benchtab.PerGB(p.cpu(), nzBytes), benchtab.PerGB(p.srv, nzBytes))
	}
	t.Add("2. single stream (1 conn), verified write",
		fmt.Sprintf("%.0f MB/s data (%.0f MB/s image)", bc1Rate, mbps(*size, bc1run.wall)),
		fmt.Sprintf("%.0f sha256sum (1 core), %.0f dd oflag=direct", shaRate, ddRate),
		fmt.Sprintf("≥ %.0f (90%% of lower)", 0.9*lower), benchtab.Met(bc1Rate >= 0.9*lower))
	t.Add("   cores: hashing (HashTime/wall), CPU/wall",
		fmt.Sprintf("%.2f hashing, %.2f CPU, max %d at once", hashCores(bc1), cpu(bc1, bc1run), bc1.MaxHashing),
		fmt.Sprintf("(openssl dgst -sha256: %.0f MB/s, 1 core SHA-NI)", osslRate), "", "")
	t.Add("   CPU per GB of data", perGB(bc1run), "", "", "")
	t.Add("   over HTTPS (1 conn, pinned as the agent)",
		fmt.Sprintf("%.0f MB/s data (%s of plain)", bc1TLSRate, benchtab.Of(bc1TLSRate, bc1Rate)),
		"(the same sha256sum and dd)",
		fmt.Sprintf("≥ %.0f (90%% of lower)", 0.9*lower), benchtab.Met(bc1TLSRate >= 0.9*lower))
	t.Add("   cores; CPU per GB of data",
		fmt.Sprintf("%.2f hashing, %.2f CPU; %s", hashCores(bc1TLS), cpu(bc1TLS, bc1TLSrun), perGB(bc1TLSrun)), bc1TLS.TLS, "", "")
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
		argvs = append(argvs, e.copyArgv(e.imaged, o, "-zeroed"))
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
		argvs = append(argvs, []string{"bash", "-c", fmt.Sprintf("set -e; curl -sf -o %s %s; sync %s", o, e.ngx.url, o)})
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
	// The servers alone: the same clients (curl) pulling the whole blob to /dev/null, plain and
	// over HTTPS, the four servers alternating run by run (the median of each, so that a burst
	// of other load on this 2-core machine does not decide a row), with the CPU each server's
	// processes and the clients spent.
	e.log("part 3: servers only, plain and HTTPS, %d runs", *runs)
	srvs := []server{e.imaged, e.ngx, e.imagedTLS, e.ngxTLS}
	rates := make([][]float64, len(srvs))
	srvCPU := make([]time.Duration, len(srvs))
	cliCPU := make([]time.Duration, len(srvs))
	for range *runs {
		for i, s := range srvs {
			argvs = argvs[:0]
			for range *clients {
				argvs = append(argvs, s.curl("/dev/null"))
			}
			var rs []proc
			var w time.Duration
			c, err := onServer(s, func() (err error) { rs, w, err = e.measure(ctx, argvs...); return err })
			if err != nil {
				return err
			}
			rates[i] = append(rates[i], mbps(int64(*clients)**size, w))
			srvCPU[i] += c
			for _, r := range rs {
				cliCPU[i] += r.cpu()
			}
		}
	}
	med := make([]float64, len(srvs))
	cpuCell := func(i int, who string) string {
		moved := int64(*runs) * int64(*clients) * *size
		return fmt.Sprintf("CPU per GB: %s %s, curl %s", who, benchtab.PerGB(srvCPU[i], moved), benchtab.PerGB(cliCPU[i], moved))
	}
	for i := range srvs {
		med[i] = benchtab.Median(rates[i])
	}
	t.Add(fmt.Sprintf("   servers only: %d curl → /dev/null (median)", *clients),
		fmt.Sprintf("%.0f MB/s  imaged serve", med[0]),
		fmt.Sprintf("%.0f MB/s  nginx sendfile", med[1]),
		fmt.Sprintf("≥ %.0f (90%% nginx)", 0.9*med[1]), benchtab.Met(med[0] >= 0.9*med[1]))
	t.Add("", fmt.Sprintf("runs: %s", joinf(rates[0])), fmt.Sprintf("runs: %s", joinf(rates[1])), "", "")
	t.Add("", cpuCell(0, "imaged"), cpuCell(1, "nginx"), "", "")
	t.Add("   … over HTTPS (median)",
		fmt.Sprintf("%.0f MB/s  imaged serve (%s of plain)", med[2], benchtab.Of(med[2], med[0])),
		fmt.Sprintf("%.0f MB/s  nginx ssl, no sendfile (%s of plain)", med[3], benchtab.Of(med[3], med[1])),
		fmt.Sprintf("≥ %.0f (90%% nginx HTTPS)", 0.9*med[3]), benchtab.Met(med[2] >= 0.9*med[3]))
	t.Add("", fmt.Sprintf("runs: %s", joinf(rates[2])), fmt.Sprintf("runs: %s", joinf(rates[3])), "", "")
	t.Add("", cpuCell(2, "imaged"), cpuCell(3, "nginx"), "", "")
	t.Add("", tlsOf(ctx, e.imagedTLS), tlsOf(ctx, e.ngxTLS), "", "")

	// Part 4: memory.
	t.Add("4. agent peak RSS writing 2 GiB", fmt.Sprintf("%.1f MiB (4 conns); %.1f MiB (1 conn)", float64(bc4run.ru.Maxrss)/1024, float64(bc1run.ru.Maxrss)/1024),
		fmt.Sprintf("max of %d agents: %.1f MiB", *clients, float64(rss)/1024), "< 128 MiB", benchtab.Met(bc4run.ru.Maxrss < 128<<10 && rss < 128<<10))

	// Part 5: O_DIRECT or the page cache, on a file and on a loop device.
	e.log("part 5: O_DIRECT vs buffered")
	_, bcOff, err := e.copyRuns(ctx, *runs, e.imaged, out, "-direct", "off")
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
	fmt.Fprintf(stdout, "(image served over 127.0.0.1 by `imaged serve`, GET /images/{digest}/blob from its blob store after `imaged image import`: plain HTTP with http.tls off, HTTPS as shipped, on its self-signed RSA 2048 certificate, pinned by blockcopy as the agent pins it; nginx %s only in part 3, over HTTPS on an RSA 2048 certificate from openssl req, TLS in user space (no Options KTLS; %s); bench took %.0f s)\n",
		strings.TrimPrefix(strings.TrimSpace(versionOf("nginx", "-v")), "nginx version: "), kTLS(), time.Since(benchStart).Seconds())
	return nil
}

// copyRuns runs one agent n times from s onto out (a new file each time, or null), verifies the
// first output, and returns the run of median wall time, with the CPU s used during it.
func (e *env) copyRuns(ctx context.Context, n int, s server, out string, extra ...string) (copyResult, proc, error) {
	type one struct {
		res copyResult
		p   proc
	}
	var all []one
	for i := range n {
		if out != "null" {
			e.clean(out)
		}
		var r []proc
		c, err := onServer(s, func() (err error) {
			r, _, err = e.measure(ctx, e.copyArgv(s, out, append([]string{"-zeroed"}, extra...)...))
			return err
		})
		if err != nil {
			return copyResult{}, proc{}, err
		}
		r[0].srv = c
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
