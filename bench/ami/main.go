// Command ami measures `imaged ami push`'s snapshot upload (cloud.PushSnapshot, the code the
// command runs) against awsfake set up like EBS: a latency on every request and the per-snapshot
// limit of PutSnapshotBlock requests per second. The peer is that limit's ceiling: limit × 512 KiB
// per second, which no client can beat. It prints the push rate as a fraction of the ceiling
// (target ≥ 80 %) and the blocks skipped as zero.
//
//	go run ./bench/ami                      (2 GiB, half zero, 20 ms, 1000 requests/s, 3 runs)
//	go run ./bench/ami -gib 4 -latency 50ms -runs 1
//
// Everything stays in this process and on loopback.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"

	"github.com/imaged/imaged/bench/internal/benchtab"
	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/cloud"
	"github.com/imaged/imaged/internal/cloud/awsfake"
)

func main() {
	gib := flag.Int("gib", 2, "image size in GiB")
	zero := flag.Float64("zero", 0.5, "fraction of the image's blocks that are zero")
	latency := flag.Duration("latency", 20*time.Millisecond, "added to every request")
	limit := flag.Int("limit", 1000, "PutSnapshotBlock requests per second per snapshot")
	burst := flag.Duration("burst", 50*time.Millisecond, "the per-snapshot bucket holds this much of the limit (the fake's default is 1 s, which a short push would profit from)")
	workers := flag.Int("workers", 64, "blocks in flight (imaged ami push -workers)")
	runs := flag.Int("runs", 3, "pushes; the table shows the median")
	flag.Parse()
	log.SetFlags(0)

	img := newSynthetic(int64(*gib)<<30, *zero)
	b := images.NewBuilder()
	if _, err := io.Copy(b, io.NewSectionReader(img, 0, img.size)); err != nil {
		log.Fatal(err)
	}
	m, err := b.Manifest()
	if err != nil {
		log.Fatal(err)
	}
	nz, _ := m.NonZero()

	burstN := max(1, int(float64(*limit)*burst.Seconds()))
	f := awsfake.New(awsfake.Options{Latency: *latency, BlockRateLimit: *limit, BlockRateBurst: burstN, DiscardBlockData: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: f.Handler()}
	go srv.Serve(ln)
	defer srv.Close()
	// As `imaged ami push` builds it: the SDK's client with an idle connection per worker and
	// no SDK retries (PushSnapshot retries each block itself).
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConnsPerHost, tr.MaxIdleConns = *workers, 2**workers
	})
	c := ebs.New(ebs.Options{BaseEndpoint: aws.String("http://" + ln.Addr().String()), Region: "us-east-1",
		HTTPClient: hc, RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDBENCH", "secret", "")})

	ceiling := float64(*limit) * images.BlockSize // bytes per second
	var rates []float64
	var durs []time.Duration
	var res cloud.PushResult
	var cpu []float64
	for r := 0; r < *runs; r++ {
		u0 := cpuTime()
		res, err = cloud.PushSnapshot(context.Background(), c, img, m, cloud.PushOptions{Workers: *workers})
		if err != nil {
			log.Fatal(err)
		}
		s, _ := f.Snapshot(res.SnapshotID)
		if len(s.Blocks) != nz || s.AggregateChecksum != res.Aggregate {
			log.Fatalf("run %d: the fake holds %d of %d blocks, aggregate %s vs %s", r, len(s.Blocks), nz, s.AggregateChecksum, res.Aggregate)
		}
		durs = append(durs, res.Duration)
		rates = append(rates, float64(res.BytesPushed)/res.Duration.Seconds())
		cpu = append(cpu, (cpuTime()-u0).Seconds()/res.Duration.Seconds())
		fmt.Fprintf(os.Stderr, "run %d: %d blocks in %.2f s, %.0f MB/s, %d throttled\n", r+1, res.Blocks, res.Duration.Seconds(), rates[r]/1e6, res.Throttled)
	}
	med := benchtab.Median(rates)
	frac := med / ceiling
	fmt.Printf("image %d GiB, %d blocks: %d non-zero, %d zero; awsfake latency %v, %d PutSnapshotBlock/s per snapshot (burst %d); %d workers; %d runs on %d CPUs\n\n",
		*gib, len(m.Blocks), nz, len(m.Blocks)-nz, *latency, *limit, burstN, *workers, *runs, runtime.NumCPU())
	t := benchtab.Table{{"measure", "imaged ami push", "peer: the limit's ceiling", "target"}}
	t = append(t,
		[]string{"push rate (median)", fmt.Sprintf("%.1f MB/s (%.1f MiB/s)", med/1e6, med/(1<<20)),
			fmt.Sprintf("%.1f MB/s (%.1f MiB/s)", ceiling/1e6, ceiling/(1<<20)), ""},
		[]string{"fraction of the ceiling", fmt.Sprintf("%.1f %%", 100*frac), "100 %", "≥ 80 %: " + benchtab.Met(frac >= 0.8)},
		[]string{"runs (s)", benchtab.Secs(durs), fmt.Sprintf("%.2f", float64(nz)/float64(*limit)), ""},
		[]string{"blocks sent / skipped as zero", fmt.Sprintf("%d / %d", res.Blocks, res.Skipped), fmt.Sprintf("%d / %d", nz, len(m.Blocks)-nz), "all zero blocks skipped: " + benchtab.Met(res.Skipped == len(m.Blocks)-nz)},
		[]string{"throttled and retried (last run)", fmt.Sprintf("%d (%.1f %% of the puts)", res.Throttled, 100*float64(res.Throttled)/float64(res.Sent+res.Retries)), "", ""},
		[]string{"CPU of this process (bench + fake)", fmt.Sprintf("%.2f cores", benchtab.Median(cpu)), "", ""},
	)
	if *limit == 1000 {
		// The issue states the ceiling as 512 MiB/s; 1000 × 512 KiB is 500 MiB/s.
		t = slices.Insert(t, 3, []string{"fraction of 512 MiB/s", fmt.Sprintf("%.1f %%", 100*med/(512<<20)), "", "≥ 80 %: " + benchtab.Met(med >= 0.8*(512<<20))})
	}
	t.Print(os.Stdout)
}

// synthetic is an image whose blocks are made on the fly: a zero block, or bytes from a
// generator seeded by the block's index, so no 2 GiB file is needed.
type synthetic struct {
	size int64
	zero []bool
}

func newSynthetic(size int64, zeroFrac float64) *synthetic {
	n := images.NumBlocks(size)
	s := &synthetic{size: size, zero: make([]bool, n)}
	rng := rand.New(rand.NewPCG(42, 42))
	for i := range s.zero {
		s.zero[i] = rng.Float64() < zeroFrac
	}
	return s
}

func (s *synthetic) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	n := len(p)
	if rem := s.size - off; int64(n) > rem {
		n = int(rem)
	}
	for done := 0; done < n; {
		i := (off + int64(done)) / images.BlockSize
		in := (off + int64(done)) % images.BlockSize
		k := min(n-done, int(images.BlockSize-in))
		fillBlock(p[done:done+k], i, in, s.zero[i])
		done += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// pattern is the bytes of every non-zero block but its first 8, which hold the block's index:
// every block differs (and hashes differently) while filling one costs a memory copy.
var pattern = func() []byte {
	p := make([]byte, images.BlockSize)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64()|1)
	}
	return p
}()

// fillBlock writes bytes [in, in+len(p)) of block i.
func fillBlock(p []byte, i, in int64, zero bool) {
	if zero {
		clear(p)
		return
	}
	copy(p, pattern[in:])
	var head [8]byte
	binary.LittleEndian.PutUint64(head[:], uint64(i)+1)
	for j := in; j < 8 && j < in+int64(len(p)); j++ {
		p[j-in] = head[j]
	}
}

func cpuTime() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}
