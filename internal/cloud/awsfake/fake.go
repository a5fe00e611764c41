// Package awsfake is a wire-level fake of the AWS APIs that imaged's EC2
// publisher uses: the EBS direct APIs (restJson1), a subset of EC2 (EC2 Query
// protocol, API version 2016-11-15) and S3 objects (REST-XML, path style).
//
// The real aws-sdk-go-v2 clients talk to it unchanged through an endpoint
// override (BaseEndpoint), and it refuses what AWS documents as refused, so a
// test fails for the reason production would. Slow transitions (snapshot
// pending → completed, image pending → available, instance pending → running)
// take configurable delays measured on an injectable clock.
//
// Only tests import this package.
package awsfake

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// BlockSize is the EBS direct API block size: "Currently, the only supported
// size is 524288 bytes" (PutSnapshotBlock, DataLength).
const BlockSize = 524288

// Options configures a Fake. The zero value is usable.
type Options struct {
	// Region is assumed when a request carries no SigV4 credential scope.
	// Default us-east-1.
	Region string
	// AccountID is the owner of snapshots, images and instances. Default
	// 123456789012.
	AccountID string
	// Now is the clock all delays are measured on. Default time.Now.
	Now func() time.Time

	// SnapshotCompletionDelay is how long a snapshot stays pending after
	// CompleteSnapshot was accepted.
	SnapshotCompletionDelay time.Duration
	// ImageAvailableDelay is how long an AMI stays pending after
	// RegisterImage or CopyImage.
	ImageAvailableDelay time.Duration
	// InstanceRunningDelay is how long an instance stays pending after
	// RunInstances; InstanceTerminateDelay how long it stays shutting-down.
	InstanceRunningDelay   time.Duration
	InstanceTerminateDelay time.Duration
	// TimeoutUnit scales StartSnapshot's Timeout (documented in minutes).
	// Default time.Minute.
	TimeoutUnit time.Duration

	// BlockRateLimit is the per-snapshot PutSnapshotBlock limit in requests
	// per second ("1,000 requests per second per snapshot" in the EBS direct
	// API quotas). 0 means the default 1000; negative disables the limit.
	BlockRateLimit int
	// BlockRateBurst is how many requests the per-snapshot bucket holds
	// (a burst above the rate). Default: one second's worth.
	BlockRateBurst int
	// Latency is added to every request before it is handled.
	Latency time.Duration

	// Faults are injected errors; see Fault.
	Faults []Fault
	// Seed seeds the generator that decides probabilistic faults, so a run
	// is reproducible.
	Seed uint64

	// DiscardBlockData keeps only block checksums, not their bytes (for
	// large benchmark uploads).
	DiscardBlockData bool
	// Buckets exist from the start; PUT /bucket creates more.
	Buckets []string
	// ConsoleOutput is what GetConsoleOutput returns for every instance
	// unless SetConsoleOutput overrides it.
	ConsoleOutput string
	// InstancePrivateIP, when valid, is every instance's private IPv4
	// address (a test sets 127.0.0.1 to probe a listener of its own);
	// otherwise instances get 10.0.x.y in launch order.
	InstancePrivateIP netip.Addr
	// InstancePublicIP, when valid, is every running instance's public IPv4
	// address, as in a subnet that maps public addresses on launch;
	// otherwise instances have none.
	InstancePublicIP netip.Addr
}

// FaultKind names an injected failure; how it looks on the wire depends on
// the service (see Fault).
type FaultKind int

const (
	// FaultThrottle is the service's throttling error: EBS
	// RequestThrottledException (HTTP 400, with Reason); EC2
	// RequestLimitExceeded (HTTP 503); S3 SlowDown (HTTP 503).
	FaultThrottle FaultKind = iota + 1
	// FaultThrottling429 is an EBS ThrottlingException with HTTP 429: not
	// in the EBS model (the SDK surfaces it as a generic API error), but a
	// code every SDK retryer treats as throttling. EC2 and S3 answer it as
	// FaultThrottle.
	FaultThrottling429
	// FaultUnavailable is a plain HTTP 503 in the service's error format
	// (ServiceUnavailable / Unavailable).
	FaultUnavailable
	// FaultInternal is HTTP 500 (EBS InternalServerException, EC2
	// InternalError, S3 InternalError).
	FaultInternal
)

// Fault injects an error into matching requests, before they are validated
// or change any state.
type Fault struct {
	// Operation is the operation name ("PutSnapshotBlock", "DescribeImages",
	// "PutObject"); empty matches every operation.
	Operation string
	Kind      FaultKind
	// Reason is the EBS RequestThrottledException Reason
	// (ACCOUNT_THROTTLED, DEPENDENCY_REQUEST_THROTTLED,
	// RESOURCE_LEVEL_THROTTLE). Default ACCOUNT_THROTTLED.
	Reason string
	// Count > 0 fails only the next Count matching requests; otherwise
	// Probability (0..1, drawn from the seeded generator) applies, and
	// Count == 0 with Probability == 0 fails every matching request.
	Count       int
	Probability float64
}

// Fake holds the state of all simulated services. It is safe for concurrent
// use.
type Fake struct {
	opts Options

	mu        sync.Mutex
	rng       *rand.Rand
	seq       uint64
	faults    []Fault
	requests  map[string]int
	snapshots map[string]*snapshot
	tokens    map[string]string // region/client token → snapshot id
	images    map[string]*image
	instances map[string]*instance
	launches  map[string]*launch  // instance id → how it was launched
	runTokens map[string]runToken // region/client token → RunInstances call
	hosts     int                 // private addresses handed out
	buckets   map[string]map[string]*Object
	limiters  map[string]*limiter
	console   map[string]string
}

// New returns a Fake configured by opts.
func New(opts Options) *Fake {
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.AccountID == "" {
		opts.AccountID = "123456789012"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TimeoutUnit == 0 {
		opts.TimeoutUnit = time.Minute
	}
	if opts.BlockRateLimit == 0 {
		opts.BlockRateLimit = 1000
	}
	if opts.BlockRateBurst <= 0 {
		opts.BlockRateBurst = max(opts.BlockRateLimit, 1)
	}
	f := &Fake{
		opts:      opts,
		rng:       rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		faults:    append([]Fault(nil), opts.Faults...),
		requests:  map[string]int{},
		snapshots: map[string]*snapshot{},
		tokens:    map[string]string{},
		images:    map[string]*image{},
		instances: map[string]*instance{},
		launches:  map[string]*launch{},
		runTokens: map[string]runToken{},
		buckets:   map[string]map[string]*Object{},
		limiters:  map[string]*limiter{},
		console:   map[string]string{},
	}
	for _, b := range opts.Buckets {
		f.buckets[b] = map[string]*Object{}
	}
	return f
}

// Handler serves all three services. Requests are routed by the service in
// their SigV4 credential scope (ebs, ec2, s3), so one URL can be every
// client's BaseEndpoint; unsigned requests are routed by shape.
func (f *Fake) Handler() http.Handler { return http.HandlerFunc(f.serveHTTP) }

// Start serves the Fake on a loopback httptest server (a kernel-chosen port)
// and closes it when the test ends. The server's URL is the BaseEndpoint for
// every client.
func (f *Fake) Start(tb interface{ Cleanup(func()) }) *httptest.Server {
	srv := httptest.NewServer(f.Handler())
	tb.Cleanup(srv.Close)
	return srv
}

// InjectFault adds a fault at run time.
func (f *Fake) InjectFault(ft Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, ft)
}

// ClearFaults removes every injected fault.
func (f *Fake) ClearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

func (f *Fake) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if d := f.opts.Latency; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	service, region := credentialScope(r.Header.Get("Authorization"))
	if region == "" {
		region = f.opts.Region
	}
	if service == "" {
		switch {
		case strings.HasPrefix(r.URL.Path, "/snapshots"):
			service = "ebs"
		case r.Method == http.MethodPost && r.URL.Path == "/" &&
			strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded"):
			service = "ec2"
		default:
			service = "s3"
		}
	}
	switch service {
	case "ebs":
		f.serveEBS(w, r, region)
	case "ec2":
		f.serveEC2(w, r, region)
	case "s3":
		f.serveS3(w, r)
	default:
		http.Error(w, "awsfake: unknown service "+service, http.StatusBadRequest)
	}
}

// credentialScope extracts service and region from a SigV4 Authorization
// header: "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-west-2/ec2/aws4_request, ...".
func credentialScope(auth string) (service, region string) {
	_, cred, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return "", ""
	}
	cred, _, _ = strings.Cut(cred, ",")
	parts := strings.Split(cred, "/")
	if len(parts) != 5 {
		return "", ""
	}
	return parts[3], parts[2]
}

// begin counts a request for op, brings time-driven state up to date and
// decides whether a fault answers it instead. It returns with f.mu held;
// the caller unlocks.
func (f *Fake) begin(op string) (now time.Time, fault *Fault) {
	now = f.opts.Now()
	f.mu.Lock()
	f.requests[op]++
	f.advance(now)
	for i := range f.faults {
		ft := &f.faults[i]
		if ft.Operation != "" && ft.Operation != op {
			continue
		}
		c := *ft
		switch {
		case ft.Count > 0:
			if ft.Count--; ft.Count == 0 {
				f.faults = slices.Delete(f.faults, i, i+1) // spent
			}
		case ft.Probability > 0:
			if f.rng.Float64() >= ft.Probability {
				continue
			}
		}
		return now, &c
	}
	return now, nil
}

// advance applies every delayed transition due at now. Called with f.mu held.
func (f *Fake) advance(now time.Time) {
	for _, s := range f.snapshots {
		if s.State != "pending" {
			continue
		}
		switch {
		case !s.completeAt.IsZero():
			if !now.Before(s.completeAt) {
				s.State = "completed"
				s.Progress = 100
			}
		case now.Sub(s.lastActivity) > time.Duration(s.Timeout)*f.opts.TimeoutUnit:
			// StartSnapshot Timeout: "the snapshot is automatically
			// cancelled if no blocks are written to the snapshot" or
			// none for the timeout period.
			s.State = "error"
		}
	}
	for _, im := range f.images {
		if im.State == "pending" && !now.Before(im.availableAt) {
			im.State = "available"
		}
	}
	for _, in := range f.instances {
		switch {
		case in.State == "pending" && !now.Before(in.runningAt):
			in.State = "running"
		case in.State == "shutting-down" && !now.Before(in.terminatedAt):
			in.State = "terminated"
		}
	}
}

// newID returns prefix-<17 hex digits>, unique within the Fake. Called with
// f.mu held.
func (f *Fake) newID(prefix string) string {
	f.seq++
	return fmt.Sprintf("%s-%017x", prefix, f.seq)
}

// limiter is a token bucket for the per-snapshot block rate.
type limiter struct {
	tokens float64
	last   time.Time
}

// allow reports whether one more request fits rate/s. Called with f.mu held.
func (f *Fake) allow(key string, now time.Time) bool {
	rate := float64(f.opts.BlockRateLimit)
	if rate < 0 {
		return true
	}
	burst := float64(f.opts.BlockRateBurst)
	l, ok := f.limiters[key]
	if !ok {
		l = &limiter{tokens: burst, last: now}
		f.limiters[key] = l
	}
	l.tokens = min(burst, l.tokens+now.Sub(l.last).Seconds()*rate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}
