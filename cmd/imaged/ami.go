package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/cloud"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/progressbar"
)

var amiUsage = map[string]string{
	"push":     "usage: imaged ami push [flags] NAME@VERSION|NAME@CHANNEL|sha256:DIGEST",
	"promote":  "usage: imaged ami promote [flags] NAME@VERSION CHANNEL",
	"rollback": "usage: imaged ami rollback [flags] NAME@CHANNEL",
	"list":     "usage: imaged ami list [flags] [NAME]",
	"prune":    "usage: imaged ami prune [-keep N] [-dry-run] [NAME ...]   (default: every image in the catalog and the contract)",
	"smoke":    "usage: imaged ami smoke [flags] ami-ID|NAME@VERSION",
}

// cmdAMI publishes catalog images to EC2 as AMIs (push, with copies into other regions), keeps
// the published contract amis.json (promote, rollback), removes old AMIs (prune) and smoke-tests
// an AMI on a real instance (smoke). The ec2 section of the config gives the defaults; the
// credentials come from the AWS SDK's default chain.
func cmdAMI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "ami", "push", "list", "promote", "rollback", "prune", "smoke")
	if err != nil {
		return err
	}
	fs := newFlags("ami "+sub, stderr)
	path := configFlag(fs)
	region := fs.String("region", "", "the AWS region pushed to (default: ec2.region, else the SDK's: AWS_REGION, ~/.aws/config)")
	endpoint := fs.String("endpoint", "", "an EC2/EBS/S3-compatible endpoint instead of AWS's (default: ec2.endpoint)")
	var f amiFlags
	switch sub {
	case "push":
		f.workers = fs.Int("workers", 0, "blocks in flight (default: ec2.workers, 64)")
		f.copyTo = fs.String("copy-to", "", "regions to copy the AMI into, comma-separated (default: ec2.copy_to; - for none)")
		f.bootMode = fs.String("boot-mode", "", "legacy-bios, uefi or uefi-preferred (default: read from the image: MBR boot code, EFI System Partition, or both)")
	case "list":
		f.contract = fs.String("contract", "", "the published amis.json, to show what the channels point at (default: ec2.contract; optional)")
		f.copyTo = fs.String("copy-to", "", "the other regions to list (default: ec2.copy_to; - for none)")
	case "promote", "rollback", "prune":
		f.contract = fs.String("contract", "", "the published amis.json, s3://bucket/key (default: ec2.contract)")
		f.copyTo = fs.String("copy-to", "", "the other regions the contract covers (default: ec2.copy_to; - for none)")
		if sub == "prune" {
			f.keep = fs.Int("keep", 0, "AMIs to keep per image and region, besides what the channels point at (default: ec2.keep, 10)")
			f.dryRun = fs.Bool("dry-run", false, "only print what would be removed")
		}
	case "smoke":
		f.subnet = fs.String("subnet", "", "subnet-… to launch into (default: ec2.smoke.subnet; none: the default VPC)")
		f.groups = fs.String("security-group", "", "sg-…, comma-separated, letting the probe in (default: ec2.smoke.security_groups)")
		f.instanceType = fs.String("instance-type", "", "default: ec2.smoke.instance_type, t3.micro")
		f.probe = fs.String("probe", "", "tcp:PORT or http://:PORT/PATH (default: ec2.smoke.probe)")
		f.report = fs.String("report", "", "report directory, must be empty (default: a new one under ec2.smoke.report_dir)")
		f.timeout = fs.Duration("timeout", 5*time.Minute, "from launch to verdict")
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	want := map[string]int{"push": 1, "promote": 2, "rollback": 1, "smoke": 1}[sub]
	switch {
	case sub == "prune" && *f.keep < 0, sub == "list" && fs.NArg() > 1, sub != "prune" && sub != "list" && fs.NArg() != want:
		return usageError{amiUsage[sub]}
	}
	if *region != "" && !config.IsAWSRegion(*region) {
		return usageError{fmt.Sprintf("-region %q is not an AWS region (like us-east-1)", *region)}
	}
	if f.copyTo != nil && *f.copyTo != "-" {
		for _, r := range strings.Split(*f.copyTo, ",") {
			if r = strings.TrimSpace(r); r != "" && !config.IsAWSRegion(r) {
				return usageError{fmt.Sprintf("-copy-to: %q is not an AWS region (write -copy-to eu-west-1,ap-southeast-2, or - for none)", r)}
			}
		}
	}
	if f.workers != nil && (*f.workers < 0 || *f.workers > 1024) {
		return usageError{fmt.Sprintf("-workers %d is out of range (1-1024)", *f.workers)}
	}
	if sub == "push" {
		switch *f.bootMode {
		case "", cloud.BootLegacyBIOS, cloud.BootUEFI, cloud.BootUEFIPreferred:
		default:
			return usageError{fmt.Sprintf("-boot-mode %q: use legacy-bios, uefi or uefi-preferred (or leave it out to read it from the image)", *f.bootMode)}
		}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if sub == "list" && *f.contract == "" && cfg.EC2.Contract == "" {
		f.contract = nil // listing works without a contract
	}
	env, err := newAMIEnv(ctx, cfg, *region, *endpoint, f)
	if err != nil {
		return err
	}
	switch sub {
	case "push":
		return env.push(ctx, fs.Arg(0), stdout, stderr)
	case "promote":
		return env.promote(ctx, fs.Arg(0), fs.Arg(1), stdout)
	case "rollback":
		return env.rollback(ctx, fs.Arg(0), stdout)
	case "prune":
		return env.prune(ctx, fs.Args(), stdout)
	case "list":
		return env.list(ctx, fs.Arg(0), stdout)
	default:
		return env.smoke(ctx, fs.Arg(0), stdout, stderr)
	}
}

// amiFlags are the subcommands' own flags; nil when a subcommand has no such flag.
type amiFlags struct {
	workers, keep                               *int
	copyTo, contract, bootMode                  *string
	dryRun                                      *bool
	subnet, groups, instanceType, probe, report *string
	timeout                                     *time.Duration
}

// amiEnv is the AWS side of an ami command: the SDK configuration and clients, the regions, the
// contract, with the flags applied over the config file's ec2 section.
type amiEnv struct {
	cfg      *config.File
	aws      aws.Config
	endpoint string
	region   string
	copyTo   []string
	flags    amiFlags
	contract cloud.Contract
	ec2s     map[string]*ec2.Client
}

func newAMIEnv(ctx context.Context, cfg *config.File, region, endpoint string, f amiFlags) (*amiEnv, error) {
	e := &amiEnv{cfg: cfg, flags: f, endpoint: cmp(endpoint, cfg.EC2.Endpoint), ec2s: map[string]*ec2.Client{}}
	workers := cfg.EC2.Workers
	if f.workers != nil && *f.workers > 0 {
		workers = *f.workers
	}
	// The SDK's default credential chain: environment, shared files, SSO, instance roles.
	var lo []func(*awsconfig.LoadOptions) error
	if r := cmp(region, cfg.EC2.Region); r != "" {
		lo = append(lo, awsconfig.WithRegion(r))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("AWS config: %w", err)
	}
	if ac.Region == "" {
		return nil, usageError{"no AWS region: give -region, set ec2.region in the config, or set AWS_REGION"}
	}
	// The SDK's own client (its dial and TLS timeouts, the environment's proxy), with enough idle
	// connections for every push worker to keep its own.
	ac.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConnsPerHost, tr.MaxIdleConns = workers, 2*workers
	})
	e.aws, e.region = ac, ac.Region
	if f.workers != nil {
		*f.workers = workers
	}
	e.copyTo = cfg.EC2.CopyTo
	if f.copyTo != nil && *f.copyTo != "" {
		e.copyTo = nil
		if *f.copyTo != "-" {
			for _, r := range strings.Split(*f.copyTo, ",") {
				if r = strings.TrimSpace(r); r != "" && r != e.region && !slices.Contains(e.copyTo, r) {
					e.copyTo = append(e.copyTo, r)
				}
			}
		}
	}
	if f.contract != nil {
		u := cmp(*f.contract, cfg.EC2.Contract)
		b, k, ok := strings.Cut(strings.TrimPrefix(u, "s3://"), "/")
		if u == "" || !strings.HasPrefix(u, "s3://") || !ok || b == "" || k == "" {
			return nil, usageError{fmt.Sprintf("no published contract: give -contract s3://bucket/amis.json or set ec2.contract (got %q)", u)}
		}
		e.contract = cloud.Contract{S3: s3.NewFromConfig(ac, func(o *s3.Options) {
			// amis.json is checked by parsing it; an S3-compatible store that keeps no checksums
			// (or one written before S3 kept them) is no reason for a log line on every read.
			o.DisableLogOutputChecksumValidationSkipped = true
			if e.endpoint != "" {
				o.BaseEndpoint, o.UsePathStyle = aws.String(e.endpoint), true
			}
		}), Bucket: b, Key: k}
	}
	return e, nil
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ec2In is the EC2 client of one region.
func (e *amiEnv) ec2In(region string) *ec2.Client {
	if c, ok := e.ec2s[region]; ok {
		return c
	}
	c := ec2.NewFromConfig(e.aws, func(o *ec2.Options) {
		o.Region = region
		if e.endpoint != "" {
			o.BaseEndpoint = aws.String(e.endpoint)
		}
	})
	e.ec2s[region] = c
	return c
}

// regions are the region pushed to and the ones copied into, as ImagesEC2 clients.
func (e *amiEnv) regions() map[string]cloud.ImagesEC2 {
	m := map[string]cloud.ImagesEC2{e.region: e.ec2In(e.region)}
	for _, r := range e.copyTo {
		m[r] = e.ec2In(r)
	}
	return m
}

func (e *amiEnv) push(ctx context.Context, ref string, stdout, stderr io.Writer) error {
	c, err := openCatalog(e.cfg, true, operator())
	if err != nil {
		return err
	}
	defer c.close()
	r, err := parseImageRef(ref)
	if err != nil {
		return err
	}
	info, err := c.info(ctx, r)
	if err != nil {
		return err
	}
	d := info.Image.Digest
	m, err := c.blobs.Manifest(d)
	if err != nil {
		return err
	}
	blob, err := c.blobs.Open(d)
	if err != nil {
		return err
	}
	defer blob.Close()
	eb := ebs.NewFromConfig(e.aws, func(o *ebs.Options) {
		if e.endpoint != "" {
			o.BaseEndpoint = aws.String(e.endpoint)
		}
		o.RetryMaxAttempts = 1 // PushSnapshot retries each block itself, with its own backoff
	})
	var copies []cloud.RegionClient
	for _, r := range e.copyTo {
		copies = append(copies, cloud.RegionClient{Region: r, EC2: e.ec2In(r)})
	}
	nz, _ := m.NonZero()
	bar := progressbar.New(stderr, int64(nz)*images.BlockSize, progressbar.Options{Desc: fmt.Sprintf("push %s (%d blocks of 512 KiB)", info.Image.Ref(), nz)})
	pub, err := cloud.PublishAMI(ctx, eb, e.ec2In(e.region), cloud.Image{Name: info.Image.Name, Version: info.Image.Version, Manifest: m,
		ManifestHash: info.Image.ManifestHash, Blob: blob, BootMode: *e.flags.bootMode}, cloud.PublishOptions{Region: e.region, CopyTo: copies,
		JournalDir: filepath.Join(e.cfg.StateDir, "ami-push"),
		Push:       cloud.PushOptions{Workers: *e.flags.workers, Progress: func(done, _ int) { bar.Set(int64(done) * images.BlockSize) }}})
	bar.Finish(err)
	if err != nil {
		if pub.SnapshotID != "" || pub.Push.SnapshotID != "" {
			return fmt.Errorf("%w\n(run the same push again: it resumes snapshot %s without sending the accepted blocks again)", err, cmp(pub.SnapshotID, pub.Push.SnapshotID))
		}
		return err
	}
	if pub.Existing {
		fmt.Fprintf(stdout, "%s (%s) is already published in %s: %s\n", info.Image.Ref(), info.Image.Digest, pub.Region, pub.AMI)
	} else {
		p := pub.Push
		fmt.Fprintf(stdout, "%s (%s) published in %s: %s from snapshot %s\n", info.Image.Ref(), info.Image.Digest, pub.Region, pub.AMI, pub.SnapshotID)
		if p.Duration > 0 {
			fmt.Fprintf(stdout, "  %d blocks sent (%d resumed), %d zero blocks skipped, %d retried (%d throttled), %.1f s (%.0f MB/s)\n",
				p.Sent, p.Blocks-p.Sent, p.Skipped, p.Retries, p.Throttled, p.Duration.Seconds(), float64(p.BytesPushed)/p.Duration.Seconds()/1e6)
		}
	}
	for _, cp := range pub.Copies {
		verb := "copied into"
		if cp.Existing {
			verb = "already in"
		}
		fmt.Fprintf(stdout, "  %s %s: %s\n", verb, cp.Region, cp.AMI)
	}
	return nil
}

func (e *amiEnv) list(ctx context.Context, name string, stdout io.Writer) error {
	all, err := cloud.List(ctx, e.regions(), name)
	if err != nil {
		return err
	}
	// What the channels point at, when there is a contract.
	channels := map[string][]string{} // AMI id → name@channel
	if e.contract.S3 != nil {
		doc, _, err := e.contract.Load(ctx)
		if err != nil {
			return err
		}
		for n, ic := range doc.Images {
			for ch, entry := range ic.Channels {
				for _, ami := range entry.AMIs {
					channels[ami] = append(channels[ami], n+"@"+ch)
				}
			}
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tIMAGE\tAMI\tSTATE\tDIGEST\tCREATED\tCHANNELS")
	for _, l := range all {
		slices.Sort(channels[l.ID])
		fmt.Fprintf(tw, "%s\t%s@%s\t%s\t%s\t%s\t%s\t%s\n", l.Region, l.Name, l.Version, l.ID, l.State, shortDigest(l.Digest),
			l.Created.Local().Format(time.DateTime), dash(strings.Join(channels[l.ID], ",")))
	}
	if len(all) == 0 {
		fmt.Fprintln(tw, "(no AMIs published by imaged)")
	}
	return tw.Flush()
}

func (e *amiEnv) promote(ctx context.Context, ref, channel string, stdout io.Writer) error {
	r, err := images.ParseRef(ref)
	if err != nil {
		return err
	}
	name, version := r.Name, r.Tag
	// The digest of that version: from the catalog, which is what was pushed.
	c, err := openCatalog(e.cfg, true, operator())
	if err != nil {
		return err
	}
	info, err := c.info(ctx, r)
	c.close()
	if err != nil {
		return err
	}
	if info.Image.Version != version {
		return usageError{fmt.Sprintf("%s is a channel of the catalog: promote a version, NAME@VERSION", ref)}
	}
	entry, err := cloud.Promote(ctx, e.contract, e.regions(), name, version, info.Image.Digest, channel, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s@%s (%s) is %s in %s\n", name, version, entry.Digest, channel, e.contract)
	printAMIs(stdout, entry.AMIs)
	return nil
}

func (e *amiEnv) rollback(ctx context.Context, ref string, stdout io.Writer) error {
	r, err := images.ParseRef(ref)
	if err != nil {
		return err
	}
	name, channel := r.Name, r.Tag
	from, to, err := cloud.Rollback(ctx, e.contract, e.regions(), name, channel, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s@%s rolled back from %s to %s (%s) in %s\n", name, channel, from.Version, to.Version, to.Digest, e.contract)
	printAMIs(stdout, to.AMIs)
	return nil
}

func printAMIs(w io.Writer, amis map[string]string) {
	regions := make([]string, 0, len(amis))
	for r := range amis {
		regions = append(regions, r)
	}
	slices.Sort(regions)
	for _, r := range regions {
		fmt.Fprintf(w, "  %s %s\n", r, amis[r])
	}
}

func (e *amiEnv) prune(ctx context.Context, names []string, stdout io.Writer) error {
	keep := e.cfg.EC2.Keep
	if *e.flags.keep > 0 {
		keep = *e.flags.keep
	}
	if len(names) == 0 {
		// Every image the catalog or the contract knows.
		c, err := openCatalog(e.cfg, true, operator())
		if err != nil {
			return err
		}
		cat, err := c.images(ctx)
		c.close()
		if err != nil {
			return err
		}
		var all []string
		for _, img := range cat.Images {
			all = append(all, img.Name)
		}
		doc, _, err := e.contract.Load(ctx)
		if err != nil {
			return err
		}
		for n := range doc.Images {
			all = append(all, n)
		}
		slices.Sort(all)
		names = slices.Compact(all)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	var failed []error
	for _, name := range names {
		res, err := cloud.Prune(ctx, e.contract, e.regions(), name, keep, *e.flags.dryRun)
		verb := "removed"
		if res.DryRun {
			verb = "would remove"
		}
		for _, r := range res.Regions {
			for _, k := range r.Kept {
				fmt.Fprintf(tw, "%s\t%s\t%s\tkept\t%s\t%s\n", name, r.Region, k.ID, k.Version, strings.Join(k.Why, ", "))
			}
			for _, x := range r.Removed {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\tsnapshots %s\n", name, r.Region, x.ID, verb, x.Version, strings.Join(x.Snapshots, " "))
			}
		}
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(failed...)
}

func (e *amiEnv) smoke(ctx context.Context, ref string, stdout, stderr io.Writer) error {
	s := e.cfg.EC2.Smoke
	f := e.flags
	probeText := cmp(*f.probe, s.Probe)
	if probeText == "" {
		return usageError{"no probe: give -probe tcp:22 or -probe http://:8080/healthz, or set ec2.smoke.probe"}
	}
	probe, err := cloud.ParseProbe(probeText)
	if err != nil {
		return usageError{err.Error()}
	}
	groups := s.SecurityGroups
	if *f.groups != "" {
		groups = strings.Split(*f.groups, ",")
	}
	c := e.ec2In(e.region)
	ami, err := e.resolveAMI(ctx, c, ref)
	if err != nil {
		return err
	}
	dir := *f.report
	if dir == "" {
		dir = filepath.Join(s.ReportDir, ami+"-"+time.Now().UTC().Format("20060102T150405Z"))
	}
	fmt.Fprintf(stderr, "smoke test of %s in %s: report in %s\n", ami, e.region, dir)
	rep, err := cloud.Smoke(ctx, c, cloud.SmokeOptions{AMI: ami, Subnet: cmp(*f.subnet, s.Subnet), SecurityGroups: groups,
		InstanceType: cmp(*f.instanceType, s.InstanceType), Probe: probe, ReportDir: dir, Timeout: *f.timeout, Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	fmt.Fprintf(stdout, "%s: %s", ami, rep.Verdict)
	if rep.Reason != "" {
		fmt.Fprintf(stdout, " (%s)", rep.Reason)
	}
	fmt.Fprintf(stdout, "\n  instance %s, %d probes, %d captures, terminated %v; report %s\n", rep.InstanceID, rep.Probes, len(rep.Captures), rep.Terminated, filepath.Join(dir, "report.json"))
	return err
}

// resolveAMI takes an AMI id as it is, and finds NAME@VERSION by its tags in the region.
func (e *amiEnv) resolveAMI(ctx context.Context, c *ec2.Client, ref string) (string, error) {
	if strings.HasPrefix(ref, "ami-") {
		return ref, nil
	}
	r, err := images.ParseRef(ref)
	if err != nil {
		return "", usageError{fmt.Sprintf("%q is neither an AMI id (ami-…) nor NAME@VERSION", ref)}
	}
	name, version := r.Name, r.Tag
	out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{
		{Name: aws.String("tag:" + cloud.TagName), Values: []string{name}}, {Name: aws.String("tag:" + cloud.TagVersion), Values: []string{version}},
		{Name: aws.String("state"), Values: []string{"available"}}}})
	if err != nil {
		return "", fmt.Errorf("look for %s in %s: %w", ref, e.region, err)
	}
	if len(out.Images) == 0 {
		return "", fmt.Errorf("no available AMI of %s in %s: run imaged ami push %s", ref, e.region, ref)
	}
	return aws.ToString(out.Images[0].ImageId), nil
}
