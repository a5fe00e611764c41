package cloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imaged/imaged/internal/cloud/awsfake"
)

// smokeEnv starts a fake holding one AMI registered as PublishAMI registers imaged's (x86_64 HVM,
// ENA, IMDSv2 only, UEFI) and returns it, an EC2 client and the AMI's id.
func smokeEnv(t *testing.T, opts awsfake.Options) (*awsfake.Fake, *ec2.Client, string) {
	t.Helper()
	f := awsfake.New(opts)
	srv := f.Start(t)
	c := ec2Client(srv.URL)
	return f, c, registerAMI(t, ebsClient(srv.URL), c, ec2types.BootModeValuesUefi)
}

func registerAMI(t *testing.T, e *ebs.Client, c *ec2.Client, boot ec2types.BootModeValues) string {
	t.Helper()
	snap, err := e.StartSnapshot(t.Context(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CompleteSnapshot(t.Context(), &ebs.CompleteSnapshotInput{SnapshotId: snap.SnapshotId, ChangedBlocksCount: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	im, err := c.RegisterImage(t.Context(), &ec2.RegisterImageInput{
		Name: aws.String("smoke-test-" + string(boot)), Architecture: ec2types.ArchitectureValuesX8664, VirtualizationType: aws.String("hvm"),
		EnaSupport: aws.Bool(true), ImdsSupport: ec2types.ImdsSupportValuesV20, BootMode: boot,
		RootDeviceName: aws.String("/dev/xvda"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"),
			Ebs: &ec2types.EbsBlockDevice{SnapshotId: snap.SnapshotId, VolumeType: ec2types.VolumeTypeGp3, DeleteOnTermination: aws.Bool(true)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(im.ImageId)
}

var localhost = netip.MustParseAddr("127.0.0.1")

// listen accepts TCP connections on 127.0.0.1 until the test ends and counts them.
func listen(t *testing.T) (port int, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

// closedPort is a port on 127.0.0.1 nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// hooked records RunInstances calls; with loseAnswer, a launch succeeds but its answer is lost.
type hooked struct {
	SmokeEC2
	loseAnswer bool

	mu   sync.Mutex
	runs []*ec2.RunInstancesInput
}

func (h *hooked) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, opts ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	out, err := h.SmokeEC2.RunInstances(ctx, in, opts...)
	h.mu.Lock()
	h.runs = append(h.runs, in)
	h.mu.Unlock()
	if h.loseAnswer && err == nil {
		return nil, errors.New("read tcp 127.0.0.1:443: connection reset by peer")
	}
	return out, err
}

func readReport(t *testing.T, dir string) SmokeReport {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r SmokeReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	return r
}

func instance(t *testing.T, f *awsfake.Fake, id string) awsfake.Instance {
	t.Helper()
	for _, in := range f.Instances("") {
		if in.ID == id {
			return in
		}
	}
	t.Fatalf("the fake has no instance %q", id)
	return awsfake.Instance{}
}

func gone(state string) bool { return state == "terminated" || state == "shutting-down" }

// A passing smoke launches one tagged, IMDSv2-only instance, connects to it and terminates it.
func TestSmokeTCPPasses(t *testing.T) {
	t.Parallel()
	port, accepted := listen(t)
	f, c, ami := smokeEnv(t, awsfake.Options{InstancePrivateIP: localhost, ConsoleOutput: "imaged: boot ok\n",
		InstanceRunningDelay: 200 * time.Millisecond, InstanceTerminateDelay: 200 * time.Millisecond})
	h := &hooked{SmokeEC2: c}
	dir := filepath.Join(t.TempDir(), "report") // created by Smoke
	rep, err := Smoke(t.Context(), h, SmokeOptions{
		AMI: ami, Subnet: "subnet-0123", SecurityGroups: []string{"sg-0123"}, ReportDir: dir,
		Probe: Probe{Kind: "tcp", Port: port}, Tags: map[string]string{"owner": "ci"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != SmokePass || rep.Address != "127.0.0.1" || !rep.Terminated || accepted.Load() == 0 {
		t.Errorf("report %+v; %d connections accepted", rep, accepted.Load())
	}
	in := instance(t, f, rep.InstanceID)
	if in.State != "terminated" || in.InstanceType != "t3.micro" || in.MetadataHTTPTokens != "required" ||
		in.Tags[TagSmoke] != ami || in.Tags["owner"] != "ci" || in.SubnetID != "subnet-0123" {
		t.Errorf("instance %+v", in)
	}
	if len(h.runs) != 1 {
		t.Fatalf("%d RunInstances calls", len(h.runs))
	}
	run := h.runs[0]
	if aws.ToInt32(run.MinCount) != 1 || aws.ToInt32(run.MaxCount) != 1 || aws.ToString(run.ClientToken) != rep.ClientToken ||
		run.MetadataOptions == nil || run.MetadataOptions.HttpTokens != ec2types.HttpTokensStateRequired ||
		run.InstanceInitiatedShutdownBehavior != ec2types.ShutdownBehaviorTerminate {
		t.Errorf("RunInstances %+v", run)
	}
	var tagged []ec2types.ResourceType
	for _, ts := range run.TagSpecifications {
		if slices.ContainsFunc(ts.Tags, func(tg ec2types.Tag) bool { return aws.ToString(tg.Key) == TagSmoke && aws.ToString(tg.Value) == ami }) {
			tagged = append(tagged, ts.ResourceType)
		}
	}
	if !slices.Equal(tagged, []ec2types.ResourceType{ec2types.ResourceTypeInstance, ec2types.ResourceTypeVolume}) {
		t.Errorf("%s tag on %v, want instance and volume", TagSmoke, tagged)
	}
	if got := readReport(t, dir); got.Verdict != SmokePass || got.InstanceID != rep.InstanceID || !got.Terminated || len(got.Captures) == 0 {
		t.Errorf("report.json %+v", got)
	}
}

// The HTTP probe wants 2xx at its path, and goes to the public address when there is one (the
// private one here leads nowhere).
func TestSmokeHTTP(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	srv := httptest.NewServer(mux) // 127.0.0.1; everything else is 404
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	for _, tt := range []struct {
		path    string
		verdict string
	}{{"/healthz", SmokePass}, {"/missing", SmokeFail}} {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			f, c, ami := smokeEnv(t, awsfake.Options{InstancePrivateIP: netip.MustParseAddr("192.0.2.1"), InstancePublicIP: localhost})
			probe, err := ParseProbe("http://:" + strconv.Itoa(port) + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Smoke(t.Context(), c, SmokeOptions{AMI: ami, ReportDir: t.TempDir(), Probe: probe, Timeout: 2 * time.Second})
			if rep.Verdict != tt.verdict || rep.Address != "127.0.0.1" || errors.Is(err, ErrSmokeFailed) != (tt.verdict == SmokeFail) {
				t.Errorf("verdict %s at %s, err %v; want %s", rep.Verdict, rep.Address, err, tt.verdict)
			}
			if tt.verdict == SmokeFail && !strings.Contains(rep.Reason, "404") {
				t.Errorf("reason %q does not say 404", rep.Reason)
			}
			if s := instance(t, f, rep.InstanceID).State; !gone(s) {
				t.Errorf("instance %s", s)
			}
		})
	}
}

// A failing smoke still terminates its instance and leaves the console captures: the fast schedule
// first, then the slow one, and one at the verdict.
func TestSmokeFailureTerminatesAndKeepsCaptures(t *testing.T) {
	t.Parallel()
	const console = "Kernel panic - not syncing: VFS: Unable to mount root fs\n"
	f, c, ami := smokeEnv(t, awsfake.Options{InstancePrivateIP: localhost, ConsoleOutput: console,
		InstanceRunningDelay: 200 * time.Millisecond, InstanceTerminateDelay: 200 * time.Millisecond})
	dir := t.TempDir()
	port := closedPort(t)
	start := time.Now()
	rep, err := Smoke(t.Context(), c, SmokeOptions{AMI: ami, ReportDir: dir, Probe: Probe{Kind: "tcp", Port: port},
		Timeout: 3 * time.Second, FastEvery: 200 * time.Millisecond, FastFor: time.Second, SlowEvery: time.Second})
	if !errors.Is(err, ErrSmokeFailed) || errors.Is(err, ErrNotTerminated) {
		t.Fatalf("err %v, want ErrSmokeFailed only", err)
	}
	if d := time.Since(start); d < 3*time.Second || d > 30*time.Second {
		t.Errorf("took %v for a 3 s timeout", d)
	}
	if s := instance(t, f, rep.InstanceID).State; !gone(s) {
		t.Errorf("instance %s after a failed smoke", s)
	}
	if !strings.Contains(rep.Reason, "tcp:"+strconv.Itoa(port)) || rep.Probes < 2 {
		t.Errorf("reason %q after %d probes", rep.Reason, rep.Probes)
	}

	consoles, _ := filepath.Glob(filepath.Join(dir, "console-*.txt"))
	shots, _ := filepath.Glob(filepath.Join(dir, "screenshot-*.jpg"))
	// 0, 0.2, …, 1 s (6), 2 s, maybe 3 s, and the verdict's; the default schedule makes 4 or 5.
	if len(consoles) < 7 || len(consoles) > 10 || len(shots) != len(consoles) {
		t.Errorf("%d console and %d screenshot captures, want 7 to 10 of each", len(consoles), len(shots))
	}
	for _, p := range consoles {
		if b, _ := os.ReadFile(p); string(b) != console {
			t.Errorf("%s: %q", filepath.Base(p), b)
		}
	}
	for _, p := range shots {
		if b, _ := os.ReadFile(p); !bytes.Equal(b, awsfake.Screenshot()) {
			t.Errorf("%s is not the instance's screen", filepath.Base(p))
		}
	}
	got := readReport(t, dir)
	if got.Verdict != SmokeFail || got.Reason != rep.Reason || !got.Terminated || len(got.Captures) != len(consoles)+len(shots) {
		t.Errorf("report.json: verdict %s, reason %q, terminated %v, %d captures", got.Verdict, got.Reason, got.Terminated, len(got.Captures))
	}
	if slices.IndexFunc(got.Timeline, func(e SmokeEvent) bool { return strings.HasPrefix(e.Event, "verdict: fail") }) >
		slices.IndexFunc(got.Timeline, func(e SmokeEvent) bool { return e.Event == "terminated" }) {
		t.Errorf("timeline %+v: terminated before the verdict", got.Timeline)
	}
}

// An interrupt (Ctrl-C) fails the smoke and still terminates the instance.
func TestSmokeInterrupted(t *testing.T) {
	t.Parallel()
	// The instance's service answers 503 and tells when it is first asked.
	probed := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(probed) })
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	probe := Probe{Kind: "http", Port: srv.Listener.Addr().(*net.TCPAddr).Port, Path: "/"}
	for _, tt := range []struct {
		name       string
		runningIn  time.Duration
		interrupt  func(f *awsfake.Fake) // returns when it is time to cancel
		wantReason string
	}{
		// Either while RunInstances answers (the instance is then found by its client token) or
		// just after.
		{"launching", time.Hour, func(f *awsfake.Fake) {
			for len(f.Instances("")) == 0 {
				time.Sleep(time.Millisecond)
			}
		}, "interrupted"},
		{"waiting for running", time.Hour, func(f *awsfake.Fake) {
			for f.RequestCount("DescribeInstances") == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}, "interrupted waiting for"},
		{"probing", 0, func(*awsfake.Fake) { <-probed }, "interrupted probing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, c, ami := smokeEnv(t, awsfake.Options{InstancePrivateIP: localhost, InstanceRunningDelay: tt.runningIn})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			go func() {
				tt.interrupt(f)
				cancel()
			}()
			start := time.Now()
			rep, err := Smoke(ctx, c, SmokeOptions{AMI: ami, ReportDir: t.TempDir(), Probe: probe, Timeout: time.Minute})
			if !errors.Is(err, ErrSmokeFailed) || !errors.Is(err, context.Canceled) {
				t.Errorf("err %v, want ErrSmokeFailed and context.Canceled", err)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("took %v", d)
			}
			if !strings.Contains(rep.Reason, tt.wantReason) || !rep.Terminated {
				t.Errorf("reason %q, terminated %v", rep.Reason, rep.Terminated)
			}
			if s := instance(t, f, rep.InstanceID).State; !gone(s) {
				t.Errorf("instance %s after an interrupt", s)
			}
		})
	}
}

// An instance that cannot be terminated is an error that names it, even after a pass.
func TestSmokeTerminateFails(t *testing.T) {
	t.Parallel()
	port, _ := listen(t)
	f, c, ami := smokeEnv(t, awsfake.Options{InstancePrivateIP: localhost})
	f.InjectFault(awsfake.Fault{Operation: "TerminateInstances", Kind: awsfake.FaultInternal})
	dir := t.TempDir()
	rep, err := Smoke(t.Context(), c, SmokeOptions{AMI: ami, ReportDir: dir, Probe: Probe{Kind: "tcp", Port: port}})
	if !errors.Is(err, ErrNotTerminated) || errors.Is(err, ErrSmokeFailed) || rep.InstanceID == "" || !strings.Contains(err.Error(), rep.InstanceID) {
		t.Fatalf("err %v; want ErrNotTerminated naming %s", err, rep.InstanceID)
	}
	if s := instance(t, f, rep.InstanceID).State; s != "running" {
		t.Errorf("instance %s", s)
	}
	if got := readReport(t, dir); got.Verdict != SmokePass || got.Terminated {
		t.Errorf("report.json: verdict %s, terminated %v", got.Verdict, got.Terminated)
	}
}

// A launch whose answer is lost is found by its client token and terminated.
func TestSmokeLostLaunchAnswer(t *testing.T) {
	t.Parallel()
	f, c, ami := smokeEnv(t, awsfake.Options{InstancePrivateIP: localhost})
	rep, err := Smoke(t.Context(), &hooked{SmokeEC2: c, loseAnswer: true},
		SmokeOptions{AMI: ami, ReportDir: t.TempDir(), Probe: Probe{Kind: "tcp", Port: 22}})
	if !errors.Is(err, ErrSmokeFailed) || errors.Is(err, ErrNotTerminated) || !strings.Contains(rep.Reason, "connection reset") {
		t.Errorf("err %v, reason %q", err, rep.Reason)
	}
	ins := f.Instances("")
	if len(ins) != 1 || ins[0].ID != rep.InstanceID || !gone(ins[0].State) {
		t.Errorf("instances %+v, report names %q", ins, rep.InstanceID)
	}
}

// A refused launch is a fail verdict with EC2's reason, and a report.
func TestSmokeLaunchRefused(t *testing.T) {
	t.Parallel()
	f, c, ami := smokeEnv(t, awsfake.Options{})
	dir := t.TempDir()
	rep, err := Smoke(t.Context(), c, SmokeOptions{AMI: ami, Subnet: "vpc-0123", ReportDir: dir, Probe: Probe{Kind: "tcp", Port: 22}})
	if !errors.Is(err, ErrSmokeFailed) || errors.Is(err, ErrNotTerminated) || !strings.Contains(rep.Reason, "InvalidSubnetID.Malformed") {
		t.Errorf("err %v, reason %q", err, rep.Reason)
	}
	if got := readReport(t, dir); got.Verdict != SmokeFail || got.InstanceID != "" || len(f.Instances("")) != 0 {
		t.Errorf("report.json %+v; %d instances", got, len(f.Instances("")))
	}
}

// On a Xen instance type, where GetConsoleOutput refuses Latest, the buffered output is captured.
func TestSmokeConsoleWithoutLatest(t *testing.T) {
	t.Parallel()
	port, _ := listen(t)
	f := awsfake.New(awsfake.Options{InstancePrivateIP: localhost, ConsoleOutput: "login: "})
	srv := f.Start(t)
	c := ec2Client(srv.URL)
	ami := registerAMI(t, ebsClient(srv.URL), c, ec2types.BootModeValuesLegacyBios) // Xen has no UEFI
	dir := t.TempDir()
	rep, err := Smoke(t.Context(), c, SmokeOptions{AMI: ami, InstanceType: "t2.micro", ReportDir: dir, Probe: Probe{Kind: "tcp", Port: port}})
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range rep.Captures {
		if cp.Kind == "console" && cp.Error != "" {
			t.Errorf("console capture failed: %s", cp.Error)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "console-0001.txt")); string(b) != "login: " {
		t.Errorf("console-0001.txt: %q %v", b, err)
	}
}

// Nothing is launched into a report directory that already holds something, nor with a bad probe.
func TestSmokeRefusesBeforeLaunch(t *testing.T) {
	f, c, ami := smokeEnv(t, awsfake.Options{})
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "console-0001.txt"), []byte("old"), 0o644)
	for _, opt := range []SmokeOptions{
		{AMI: ami, ReportDir: dir, Probe: Probe{Kind: "tcp", Port: 22}},
		{AMI: ami, ReportDir: t.TempDir(), Probe: Probe{Kind: "udp", Port: 53}},
		{AMI: ami, ReportDir: t.TempDir(), Probe: Probe{Kind: "tcp"}},
		{AMI: "", ReportDir: t.TempDir(), Probe: Probe{Kind: "tcp", Port: 22}},
	} {
		if _, err := Smoke(t.Context(), c, opt); err == nil {
			t.Errorf("%+v: no error", opt)
		}
	}
	if n := f.RequestCount("RunInstances"); n != 0 {
		t.Errorf("%d launches", n)
	}
}

func TestParseProbe(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Probe
		err  string // in the error when not empty
	}{
		{"tcp:22", Probe{Kind: "tcp", Port: 22}, ""},
		{"http://:8080/healthz", Probe{Kind: "http", Port: 8080, Path: "/healthz"}, ""},
		{"http://", Probe{}, "want http://:PORT/PATH"},
		{"http://:80", Probe{Kind: "http", Port: 80, Path: "/"}, ""},
		{"http://:8080/ready?deep=1", Probe{Kind: "http", Port: 8080, Path: "/ready?deep=1"}, ""},
		{"tcp:", Probe{}, `port ""`},
		{"tcp:ssh", Probe{}, `port "ssh"`},
		{"tcp:70000", Probe{}, `port "70000"`},
		{"http://:0/", Probe{}, `port "0"`},
		{"http://example.com/", Probe{}, "names a host"},
		{"http://user@:80/", Probe{}, "names a host"},
		{"http:8080", Probe{}, "want http://:PORT/PATH"},
		{"https://:443/", Probe{}, "want tcp:PORT or http://:PORT/PATH"},
		{"22", Probe{}, "want tcp:PORT"},
	} {
		got, err := ParseProbe(tt.in)
		if tt.err == "" && (err != nil || got != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParseProbe(%q) = %+v, %v; want %+v, error containing %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func FuzzParseProbe(f *testing.F) {
	for _, s := range []string{"tcp:22", "http://:8080/healthz", "http://:80", "http://:1/a%20b?c=d#e", "http://[::1]:80/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseProbe(s)
		if err != nil {
			return
		}
		if err := p.check(); err != nil {
			t.Fatalf("ParseProbe(%q) = %+v: %v", s, p, err)
		}
		again, err := ParseProbe(p.String())
		if err != nil || again != p {
			t.Fatalf("ParseProbe(%q) = %+v, but %q parses to %+v, %v", s, p, p.String(), again, err)
		}
	})
}

func TestNextCapture(t *testing.T) {
	const s = time.Second
	for _, tt := range []struct{ elapsed, want time.Duration }{
		{0, s}, {s / 10, s}, {s, 2 * s}, {14*s + s/2, 15 * s}, {15 * s, 30 * s}, {29 * s, 30 * s}, {31 * s, 45 * s},
	} {
		if got := nextCapture(tt.elapsed, s, 15*s, 15*s); got != tt.want {
			t.Errorf("nextCapture(%v) = %v, want %v", tt.elapsed, got, tt.want)
		}
	}
}
