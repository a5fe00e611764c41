package cloud

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/imaged/imaged/internal/atomicfile"
)

// SmokeEC2 is the part of the EC2 client a smoke test uses (*ec2.Client).
type SmokeEC2 interface {
	ec2.DescribeInstancesAPIClient
	RunInstances(ctx context.Context, in *ec2.RunInstancesInput, opts ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, opts ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	GetConsoleOutput(ctx context.Context, in *ec2.GetConsoleOutputInput, opts ...func(*ec2.Options)) (*ec2.GetConsoleOutputOutput, error)
	GetConsoleScreenshot(ctx context.Context, in *ec2.GetConsoleScreenshotInput, opts ...func(*ec2.Options)) (*ec2.GetConsoleScreenshotOutput, error)
}

// TagSmoke marks a smoke test's instance and volume; its value is the AMI under test.
const TagSmoke = "imaged:smoke"

// Verdicts of a smoke test.
const (
	SmokePass = "pass"
	SmokeFail = "fail"
)

var (
	// ErrSmokeFailed is a fail verdict: the AMI did not launch, run and answer the probe in time,
	// or the test was interrupted.
	ErrSmokeFailed = errors.New("cloud: smoke test failed")
	// ErrNotTerminated means a smoke instance may still be running (and billing).
	ErrNotTerminated = errors.New("cloud: smoke instance not terminated")
)

const (
	probeAttempt     = 5 * time.Second  // one connect or GET
	probeEvery       = time.Second      // between attempts
	captureTimeout   = 10 * time.Second // one round of console output and screenshot
	terminateTimeout = 4 * time.Minute  // TerminateInstances and the wait for terminated
)

// SmokeOptions describe a smoke test. Zero durations and an empty InstanceType take the defaults.
type SmokeOptions struct {
	AMI            string
	Subnet         string   // subnet-…; empty: the default VPC
	SecurityGroups []string // sg-…; they must let the probe in from here
	InstanceType   string   // t3.micro
	Probe          Probe
	ReportDir      string        // created if absent; must be empty
	Timeout        time.Duration // from launch to verdict (5 min)

	// Console output and a screenshot are captured every FastEvery (1 s) for the first FastFor
	// (15 s) after launch, then every SlowEvery (15 s) until the verdict, and once at the verdict.
	FastEvery, FastFor, SlowEvery time.Duration

	Tags map[string]string // more tags on the instance and its volume
	Log  *slog.Logger
}

// SmokeReport is the record of a smoke test, also written to ReportDir/report.json.
type SmokeReport struct {
	AMI            string         `json:"ami"`
	InstanceID     string         `json:"instance_id,omitempty"`
	InstanceType   string         `json:"instance_type"`
	Subnet         string         `json:"subnet,omitempty"`
	SecurityGroups []string       `json:"security_groups,omitempty"`
	ClientToken    string         `json:"client_token"` // RunInstances' idempotency token
	Address        string         `json:"address,omitempty"`
	Probe          string         `json:"probe"`
	Probes         int            `json:"probes"`  // attempts
	Verdict        string         `json:"verdict"` // SmokePass or SmokeFail
	Reason         string         `json:"reason,omitempty"`
	Started        time.Time      `json:"started"`
	Finished       time.Time      `json:"finished"`
	Terminated     bool           `json:"terminated"`            // seen in state terminated
	FinalState     string         `json:"final_state,omitempty"` // the instance's last known state
	Timeline       []SmokeEvent   `json:"timeline"`
	Captures       []SmokeCapture `json:"captures"`
}

// SmokeEvent is one step of a smoke test.
type SmokeEvent struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
}

// SmokeCapture is one console output or screenshot: the file it was written to in ReportDir, or
// why there is none.
type SmokeCapture struct {
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"` // console or screenshot
	File  string    `json:"file,omitempty"`
	Bytes int       `json:"bytes"`
	Error string    `json:"error,omitempty"`
}

// Smoke launches one instance of opt.AMI, waits for it to run and probes its address (public if it
// has one, else private) until the probe passes or opt.Timeout after launch, capturing its console
// output and screen into opt.ReportDir meanwhile. Whatever happens, the instance is then terminated,
// also when ctx is cancelled. The report is returned and written to ReportDir/report.json. The
// error wraps ErrSmokeFailed for a fail verdict and ErrNotTerminated, naming the instance, when it
// could not be terminated.
func Smoke(ctx context.Context, c SmokeEC2, opt SmokeOptions) (rep SmokeReport, err error) {
	if err := opt.defaults(); err != nil {
		return SmokeReport{}, err
	}
	if err := emptyDir(opt.ReportDir); err != nil {
		return SmokeReport{}, err
	}
	s := &smoke{c: c, opt: opt, log: opt.Log.With("ami", opt.AMI), latest: true, rep: SmokeReport{
		AMI: opt.AMI, InstanceType: opt.InstanceType, Subnet: opt.Subnet, SecurityGroups: opt.SecurityGroups,
		ClientToken: "imaged-smoke-" + rand.Text(), Probe: opt.Probe.String(), Verdict: SmokeFail,
		Started: time.Now(), Timeline: []SmokeEvent{}, Captures: []SmokeCapture{},
	}}
	defer func() {
		// Whatever happened (a verdict, an interrupt, a panic), the instance goes.
		if s.rep.InstanceID != "" {
			err = errors.Join(s.terminate(ctx), err)
		}
		s.rep.Finished = time.Now()
		err = errors.Join(err, s.writeReport())
		rep = s.rep
	}()
	return s.rep, s.test(ctx) // the deferred func sets the final report
}

func (o *SmokeOptions) defaults() error {
	if !strings.HasPrefix(o.AMI, "ami-") {
		return fmt.Errorf("cloud: smoke: %q is not an AMI id", o.AMI)
	}
	if o.ReportDir == "" {
		return errors.New("cloud: smoke: no report directory")
	}
	if err := o.Probe.check(); err != nil {
		return err
	}
	o.InstanceType = cmp.Or(o.InstanceType, "t3.micro")
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&o.Timeout, 5 * time.Minute}, {&o.FastEvery, time.Second}, {&o.FastFor, 15 * time.Second}, {&o.SlowEvery, 15 * time.Second}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// emptyDir makes sure dir exists and holds nothing, so that no earlier run's captures mix in.
func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cloud: smoke report directory: %w", err)
		}
	case err != nil:
		return fmt.Errorf("cloud: smoke report directory: %w", err)
	case len(ents) > 0:
		return fmt.Errorf("cloud: smoke report directory %s is not empty", dir)
	}
	return nil
}

type smoke struct {
	c      SmokeEC2
	opt    SmokeOptions
	log    *slog.Logger
	latest bool // GetConsoleOutput Latest still worth asking for; capture goroutine only
	seq    int  // capture rounds; capture goroutine only

	mu  sync.Mutex // guards rep.Timeline and rep.Captures; the rest is the main goroutine's
	rep SmokeReport
}

// errTimeout is the cause of the smoke's deadline.
var errTimeout = errors.New("smoke timeout")

// test launches, waits, probes and decides; it returns the verdict's error.
func (s *smoke) test(ctx context.Context) error {
	if err := s.launch(ctx); err != nil {
		if ctx.Err() != nil {
			return s.decide(fmt.Errorf("interrupted launching: %w", err))
		}
		return s.decide(fmt.Errorf("launch: %w", err))
	}
	launched := time.Now()
	deadline := launched.Add(s.opt.Timeout)
	tctx, cancel := context.WithDeadlineCause(ctx, deadline, errTimeout)
	defer cancel()
	finish := s.startCaptures(ctx, launched)
	defer finish()
	addr, err := s.waitRunning(tctx, deadline)
	if err == nil {
		err = s.probe(tctx, addr)
	}
	return s.decide(err)
}

func (s *smoke) decide(cause error) error {
	if cause == nil {
		s.rep.Verdict, s.rep.Reason = SmokePass, ""
		s.event("verdict: pass")
		return nil
	}
	s.rep.Verdict, s.rep.Reason = SmokeFail, cause.Error()
	s.note("verdict: fail: %v", cause) // not logged: it is the error returned
	return fmt.Errorf("%w: %s: %w", ErrSmokeFailed, s.opt.AMI, cause)
}

// over says why the smoke's clock stopped: its Timeout, or an interrupt.
func (s *smoke) over(tctx context.Context, what string, last error) error {
	if c := context.Cause(tctx); c != nil && c != errTimeout {
		return fmt.Errorf("interrupted %s: %w", what, c)
	}
	if last != nil {
		return fmt.Errorf("%s: no success within %v; last: %w", what, s.opt.Timeout, last)
	}
	return fmt.Errorf("%s: not done within %v", what, s.opt.Timeout)
}

// event adds to the timeline and logs; note only adds.
func (s *smoke) event(format string, args ...any) {
	s.log.Info("smoke: " + s.note(format, args...))
}

func (s *smoke) note(format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.rep.Timeline = append(s.rep.Timeline, SmokeEvent{Time: time.Now(), Event: msg})
	s.mu.Unlock()
	return msg
}

func (s *smoke) launch(ctx context.Context) error {
	tags := map[string]string{"Name": "imaged-smoke " + s.opt.AMI}
	maps.Copy(tags, s.opt.Tags)
	tags[TagSmoke] = s.opt.AMI
	var tagList []ec2types.Tag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		tagList = append(tagList, ec2types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	in := &ec2.RunInstancesInput{
		ImageId:          aws.String(s.opt.AMI),
		InstanceType:     ec2types.InstanceType(s.opt.InstanceType),
		MinCount:         aws.Int32(1),
		MaxCount:         aws.Int32(1),
		SecurityGroupIds: s.opt.SecurityGroups,
		ClientToken:      aws.String(s.rep.ClientToken),
		// A guest that powers itself off is gone, not a stopped instance whose volume bills on.
		InstanceInitiatedShutdownBehavior: ec2types.ShutdownBehaviorTerminate,
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
			HttpTokens: ec2types.HttpTokensStateRequired, HttpEndpoint: ec2types.InstanceMetadataEndpointStateEnabled},
		TagSpecifications: []ec2types.TagSpecification{
			{ResourceType: ec2types.ResourceTypeInstance, Tags: tagList},
			{ResourceType: ec2types.ResourceTypeVolume, Tags: tagList},
		},
	}
	if s.opt.Subnet != "" {
		in.SubnetId = aws.String(s.opt.Subnet)
	}
	s.event("launching %s (client token %s)", s.opt.InstanceType, s.rep.ClientToken)
	out, err := s.c.RunInstances(ctx, in)
	if err != nil {
		// The instance may exist with the answer lost (a timeout, an interrupt): find it by its
		// token, so that it is terminated too.
		return errors.Join(err, s.findByToken(ctx))
	}
	if len(out.Instances) != 1 {
		return fmt.Errorf("RunInstances returned %d instances", len(out.Instances))
	}
	s.rep.InstanceID = aws.ToString(out.Instances[0].InstanceId)
	s.log = s.log.With("instance", s.rep.InstanceID)
	s.event("launched %s", s.rep.InstanceID)
	return nil
}

func (s *smoke) findByToken(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	out, err := s.c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("client-token"), Values: []string{s.rep.ClientToken}}}})
	if err != nil {
		return fmt.Errorf("%w: an instance may have been launched; look for client token %s: %w", ErrNotTerminated, s.rep.ClientToken, err)
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			s.rep.InstanceID = aws.ToString(in.InstanceId)
			s.event("found %s launched with client token %s", s.rep.InstanceID, s.rep.ClientToken)
		}
	}
	return nil
}

// waitRunning waits for the instance to run and returns the address to probe.
func (s *smoke) waitRunning(tctx context.Context, deadline time.Time) (netip.Addr, error) {
	id := s.rep.InstanceID
	var last *ec2types.Instance
	w := ec2.NewInstanceRunningWaiter(s.c, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, 5*time.Second
		modeled := o.Retryable
		o.Retryable = func(ctx context.Context, in *ec2.DescribeInstancesInput, out *ec2.DescribeInstancesOutput, err error) (bool, error) {
			if err == nil {
				last = findInstance(out, id)
			}
			return modeled(ctx, in, out, err)
		}
	})
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return netip.Addr{}, s.over(tctx, "waiting for running", nil)
	}
	out, err := w.WaitForOutput(tctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, remaining)
	if err != nil {
		state := "unknown"
		if last != nil && last.State != nil {
			state = string(last.State.Name)
			if last.StateReason != nil {
				state += ": " + aws.ToString(last.StateReason.Message)
			}
		}
		s.rep.FinalState = state
		if tctx.Err() != nil { // the deadline or an interrupt
			return netip.Addr{}, s.over(tctx, fmt.Sprintf("waiting for %s to run (last state %s)", id, state), nil)
		}
		return netip.Addr{}, fmt.Errorf("%s did not reach running (last state %s): %w", id, state, err)
	}
	var ip string
	if in := findInstance(out, id); in != nil {
		ip = cmp.Or(aws.ToString(in.PublicIpAddress), aws.ToString(in.PrivateIpAddress))
	}
	s.rep.FinalState = string(ec2types.InstanceStateNameRunning)
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s runs without a usable address (%q)", id, ip)
	}
	s.rep.Address = addr.String()
	s.event("running at %s", addr)
	return addr, nil
}

func findInstance(out *ec2.DescribeInstancesOutput, id string) *ec2types.Instance {
	for _, r := range out.Reservations {
		for i, in := range r.Instances {
			if aws.ToString(in.InstanceId) == id {
				return &r.Instances[i]
			}
		}
	}
	return nil
}

// terminate terminates the instance on a context of its own (ctx may be cancelled: an interrupt
// must not leave the instance running) and waits, bounded, for it to be terminated.
func (s *smoke) terminate(ctx context.Context) error {
	id := s.rep.InstanceID
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), terminateTimeout)
	defer cancel()
	callCtx, callCancel := context.WithTimeout(ctx, time.Minute)
	out, err := s.c.TerminateInstances(callCtx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	callCancel()
	if err != nil {
		s.note("terminate failed: %v", err)
		return fmt.Errorf("%w: %s may still be running, terminate it by hand (aws ec2 terminate-instances --instance-ids %s): %w",
			ErrNotTerminated, id, id, err)
	}
	for _, c := range out.TerminatingInstances {
		if aws.ToString(c.InstanceId) == id && c.CurrentState != nil {
			s.rep.FinalState = string(c.CurrentState.Name)
		}
	}
	s.event("terminating (%s)", s.rep.FinalState)
	w := ec2.NewInstanceTerminatedWaiter(s.c, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, 5*time.Second
		// Unlike the modeled waiter, a pending state right after the termination (eventual
		// consistency) is not a failure; an instance no longer found is gone.
		o.Retryable = func(_ context.Context, _ *ec2.DescribeInstancesInput, out *ec2.DescribeInstancesOutput, err error) (bool, error) {
			var ae smithy.APIError
			if errors.As(err, &ae) && ae.ErrorCode() == "InvalidInstanceID.NotFound" {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			in := findInstance(out, id)
			return in != nil && (in.State == nil || in.State.Name != ec2types.InstanceStateNameTerminated), nil
		}
	})
	deadline, _ := ctx.Deadline()
	if err := w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, time.Until(deadline)); err != nil {
		// TerminateInstances was accepted: the instance goes, only not confirmed yet.
		s.event("termination not confirmed: %v", err)
		s.log.Warn("smoke: termination accepted but not confirmed", "err", err)
		return nil
	}
	s.rep.Terminated, s.rep.FinalState = true, string(ec2types.InstanceStateNameTerminated)
	s.event("terminated")
	return nil
}

func (s *smoke) writeReport() error {
	b, err := json.MarshalIndent(s.rep, "", "  ")
	if err != nil {
		return fmt.Errorf("cloud: smoke report: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.opt.ReportDir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("cloud: smoke report: %w", err)
	}
	return nil
}
