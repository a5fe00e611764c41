package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/internal/cloud"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/progressbar"
)

// amiCommand is one `imaged ami` subcommand: its usage, how many arguments it takes, its own
// flags and what it does.
type amiCommand struct {
	name, usage string
	min, max    int  // arguments
	contract    bool // needs the published contract (-contract or ec2.contract)
	flags       func(fs *flag.FlagSet, f *amiFlags)
	run         func(e *amiRun, ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var amiCommands = []amiCommand{
	{name: "push", usage: "usage: imaged ami push [flags] NAME@VERSION|NAME@CHANNEL|sha256:DIGEST", min: 1, max: 1,
		flags: pushFlags, run: (*amiRun).push},
	{name: "list", usage: "usage: imaged ami list [flags] [NAME]", max: 1, flags: listFlags, run: (*amiRun).list},
	{name: "promote", usage: "usage: imaged ami promote [flags] NAME@VERSION CHANNEL", min: 2, max: 2, contract: true,
		flags: contractFlags, run: (*amiRun).promote},
	{name: "rollback", usage: "usage: imaged ami rollback [flags] NAME@CHANNEL", min: 1, max: 1, contract: true,
		flags: contractFlags, run: (*amiRun).rollback},
	{name: "prune", usage: "usage: imaged ami prune [-keep N] [-dry-run] [NAME ...]   (default: every image in the catalog and the contract)",
		max: math.MaxInt, contract: true, flags: pruneFlags, run: (*amiRun).prune},
	{name: "smoke", usage: "usage: imaged ami smoke [flags] ami-ID|NAME@VERSION", min: 1, max: 1, flags: smokeFlags, run: (*amiRun).smoke},
}

// amiFlags are the subcommands' own flags; nil when a subcommand has no such flag.
type amiFlags struct {
	workers, keep                               *int
	copyTo, contract, bootMode                  *string
	dryRun                                      *bool
	subnet, groups, instanceType, probe, report *string
	timeout                                     *time.Duration
}

func pushFlags(fs *flag.FlagSet, f *amiFlags) {
	f.workers = fs.Int("workers", 0, "blocks in flight (default: ec2.workers, 64)")
	f.copyTo = fs.String("copy-to", "", "regions to copy the AMI into, comma-separated (default: ec2.copy_to; - for none)")
	f.bootMode = fs.String("boot-mode", "", "legacy-bios, uefi or uefi-preferred (default: read from the image: MBR boot code, EFI System Partition, or both)")
}

func listFlags(fs *flag.FlagSet, f *amiFlags) {
	f.contract = fs.String("contract", "", "the published amis.json, to show what the channels point at (default: ec2.contract; optional)")
	f.copyTo = fs.String("copy-to", "", "the other regions to list (default: ec2.copy_to; - for none)")
}

func contractFlags(fs *flag.FlagSet, f *amiFlags) {
	f.contract = fs.String("contract", "", "the published amis.json, s3://bucket/key (default: ec2.contract)")
	f.copyTo = fs.String("copy-to", "", "the other regions the contract covers (default: ec2.copy_to; - for none)")
}

func pruneFlags(fs *flag.FlagSet, f *amiFlags) {
	contractFlags(fs, f)
	f.keep = fs.Int("keep", 0, "AMIs to keep per image and region, besides what the channels point at (default: ec2.keep, 10)")
	f.dryRun = fs.Bool("dry-run", false, "only print what would be removed")
}

func smokeFlags(fs *flag.FlagSet, f *amiFlags) {
	f.subnet = fs.String("subnet", "", "subnet-… to launch into (default: ec2.smoke.subnet; none: the default VPC)")
	f.groups = fs.String("security-group", "", "sg-…, comma-separated, letting the probe in (default: ec2.smoke.security_groups)")
	f.instanceType = fs.String("instance-type", "", "default: ec2.smoke.instance_type, t3.micro")
	f.probe = fs.String("probe", "", "tcp:PORT or http://:PORT/PATH (default: ec2.smoke.probe)")
	f.report = fs.String("report", "", "report directory, must be empty (default: a new one under ec2.smoke.report_dir)")
	f.timeout = fs.Duration("timeout", 5*time.Minute, "from launch to verdict")
}

// cmdAMI publishes catalog images to EC2 as AMIs (push, with copies into other regions), keeps
// the published contract amis.json (promote, rollback), removes old AMIs (prune) and smoke-tests
// an AMI on a real instance (smoke). The ec2 section of the config gives the defaults; the
// credentials come from the AWS SDK's default chain.
func cmdAMI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var names []string
	for _, c := range amiCommands {
		names = append(names, c.name)
	}
	sub, rest, err := subcommand(args, "ami", names...)
	if err != nil {
		return err
	}
	cmd := amiCommands[slices.IndexFunc(amiCommands, func(c amiCommand) bool { return c.name == sub })]
	fs := newFlags("ami "+sub, stderr)
	path := configFlag(fs)
	region := fs.String("region", "", "the AWS region pushed to (default: ec2.region, else the SDK's: AWS_REGION, ~/.aws/config)")
	endpoint := fs.String("endpoint", "", "an EC2/EBS/S3-compatible endpoint instead of AWS's (default: ec2.endpoint)")
	var f amiFlags
	cmd.flags(fs, &f)
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if fs.NArg() < cmd.min || fs.NArg() > cmd.max {
		return usageError{cmd.usage}
	}
	if err := f.check(*region); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	ec := cloud.EnvConfig{Region: cmp.Or(*region, cfg.EC2.Region), Endpoint: cmp.Or(*endpoint, cfg.EC2.Endpoint),
		CopyTo: cfg.EC2.CopyTo, Connections: cfg.EC2.Workers}
	if f.workers != nil && *f.workers > 0 {
		ec.Connections = *f.workers
	}
	if f.copyTo != nil && *f.copyTo != "" {
		ec.CopyTo = nil
		if *f.copyTo != "-" {
			ec.CopyTo = regionList(*f.copyTo)
		}
	}
	if f.contract != nil {
		ec.Contract = cmp.Or(*f.contract, cfg.EC2.Contract)
		if ec.Contract == "" && cmd.contract {
			return usageError{"no published contract: give -contract s3://bucket/amis.json or set ec2.contract"}
		}
	}
	env, err := cloud.NewEnv(ctx, ec)
	if errors.Is(err, cloud.ErrNoRegion) {
		return usageError{"no AWS region: give -region, set ec2.region in the config, or set AWS_REGION"}
	}
	if err != nil {
		return err
	}
	return cmd.run(&amiRun{cfg: cfg, env: env, flags: f, workers: ec.Connections}, ctx, fs.Args(), stdout, stderr)
}

// check refuses flag values that could never work, naming the flag, before anything reaches AWS.
func (f amiFlags) check(region string) error {
	if region != "" && !config.IsAWSRegion(region) {
		return usageError{fmt.Sprintf("-region %q is not an AWS region (like us-east-1)", region)}
	}
	if f.copyTo != nil && *f.copyTo != "-" {
		for _, r := range regionList(*f.copyTo) {
			if !config.IsAWSRegion(r) {
				return usageError{fmt.Sprintf("-copy-to: %q is not an AWS region (write -copy-to eu-west-1,ap-southeast-2, or - for none)", r)}
			}
		}
	}
	if f.contract != nil && *f.contract != "" {
		if _, _, err := cloud.ParseContractURL(*f.contract); err != nil {
			return usageError{"-contract: " + err.Error()}
		}
	}
	if f.workers != nil && (*f.workers < 0 || *f.workers > 1024) {
		return usageError{fmt.Sprintf("-workers %d is out of range (1-1024)", *f.workers)}
	}
	if f.keep != nil && *f.keep < 0 {
		return usageError{fmt.Sprintf("-keep %d: keep 0 (the default, ec2.keep) or more", *f.keep)}
	}
	if f.bootMode != nil {
		switch *f.bootMode {
		case "", cloud.BootLegacyBIOS, cloud.BootUEFI, cloud.BootUEFIPreferred:
		default:
			return usageError{fmt.Sprintf("-boot-mode %q: use legacy-bios, uefi or uefi-preferred (or leave it out to read it from the image)", *f.bootMode)}
		}
	}
	return nil
}

// regionList splits a comma-separated list of regions.
func regionList(s string) []string {
	var out []string
	for _, r := range strings.Split(s, ",") {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	return out
}

// amiRun is one run of an `imaged ami` subcommand.
type amiRun struct {
	cfg     *config.File
	env     *cloud.Env
	flags   amiFlags
	workers int // blocks in flight: -workers, else ec2.workers
}

// image is the catalog's image r names, through the API (the daemon's, else in-process).
func (e *amiRun) image(ctx context.Context, r images.Ref, stderr io.Writer) (images.Image, error) {
	c, err := connectTo(e.cfg, operator(), true, stderr)
	if err != nil {
		return images.Image{}, err
	}
	defer c.close()
	info, err := c.Image(ctx, r)
	return info.Image, err
}

func (e *amiRun) push(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ref := args[0]
	r, err := parseImageRef(ref)
	if err != nil {
		return err
	}
	blobs, err := blobstore.Open(imagesDir(e.cfg))
	if err != nil {
		return err
	}
	img, err := e.image(ctx, r, stderr)
	if err != nil {
		return err
	}
	m, err := blobs.Manifest(img.Digest)
	if err != nil {
		return err
	}
	blob, err := blobs.Open(img.Digest)
	if err != nil {
		return err
	}
	defer blob.Close()
	nz, _ := m.NonZero()
	bar := progressbar.New(stderr, int64(nz)*images.BlockSize, progressbar.Options{Desc: fmt.Sprintf("push %s (%d blocks of 512 KiB)", img.Ref(), nz)})
	pub, err := cloud.PublishAMI(ctx, e.env.EBS(), e.env.EC2(e.env.Region), cloud.Image{Name: img.Name, Version: img.Version, Manifest: m,
		ManifestHash: img.ManifestHash, Blob: blob, BootMode: *e.flags.bootMode}, cloud.PublishOptions{Region: e.env.Region, CopyTo: e.env.Copies(),
		JournalDir: filepath.Join(e.cfg.StateDir, "ami-push"),
		Push:       cloud.PushOptions{Workers: e.workers, Progress: func(done, _ int) { bar.Set(int64(done) * images.BlockSize) }}})
	bar.Finish(err)
	if err != nil {
		if pub.SnapshotID != "" || pub.Push.SnapshotID != "" {
			return fmt.Errorf("%w\n(run the same push again: it resumes snapshot %s without sending the accepted blocks again)", err, cmp.Or(pub.SnapshotID, pub.Push.SnapshotID))
		}
		return err
	}
	if pub.Existing {
		fmt.Fprintf(stdout, "%s (%s) is already published in %s: %s\n", img.Ref(), img.Digest, pub.Region, pub.AMI)
	} else {
		p := pub.Push
		fmt.Fprintf(stdout, "%s (%s) published in %s: %s from snapshot %s\n", img.Ref(), img.Digest, pub.Region, pub.AMI, pub.SnapshotID)
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

func (e *amiRun) list(ctx context.Context, args []string, stdout, _ io.Writer) error {
	all, err := cloud.List(ctx, e.env.Regions(), cmp.Or(args...)) // NAME, or "": every image
	if err != nil {
		return err
	}
	// What the channels point at, when there is a contract.
	channels := map[string][]string{} // AMI id → name@channel
	if e.env.Contract.S3 != nil {
		doc, _, err := e.env.Contract.Load(ctx)
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

func (e *amiRun) promote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ref, channel := args[0], args[1]
	r, err := images.ParseRef(ref)
	if err != nil {
		return err
	}
	name, version := r.Name, r.Tag
	// The digest of that version: from the catalog, which is what was pushed.
	img, err := e.image(ctx, r, stderr)
	if err != nil {
		return err
	}
	if img.Version != version {
		return usageError{fmt.Sprintf("%s is a channel of the catalog: promote a version, NAME@VERSION", ref)}
	}
	entry, err := cloud.Promote(ctx, e.env.Contract, e.env.Regions(), name, version, img.Digest, channel, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s@%s (%s) is %s in %s\n", name, version, entry.Digest, channel, e.env.Contract)
	printAMIs(stdout, entry.AMIs)
	return nil
}

func (e *amiRun) rollback(ctx context.Context, args []string, stdout, _ io.Writer) error {
	ref := args[0]
	r, err := images.ParseRef(ref)
	if err != nil {
		return err
	}
	name, channel := r.Name, r.Tag
	from, to, err := cloud.Rollback(ctx, e.env.Contract, e.env.Regions(), name, channel, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s@%s rolled back from %s to %s (%s) in %s\n", name, channel, from.Version, to.Version, to.Digest, e.env.Contract)
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

func (e *amiRun) prune(ctx context.Context, names []string, stdout, stderr io.Writer) error {
	keep := e.cfg.EC2.Keep
	if *e.flags.keep > 0 {
		keep = *e.flags.keep
	}
	if len(names) == 0 {
		// Every image the catalog or the contract knows.
		c, err := connectTo(e.cfg, operator(), true, stderr)
		if err != nil {
			return err
		}
		cat, err := c.Images(ctx)
		c.close()
		if err != nil {
			return err
		}
		var all []string
		for _, img := range cat.Images {
			all = append(all, img.Name)
		}
		doc, _, err := e.env.Contract.Load(ctx)
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
		res, err := cloud.Prune(ctx, e.env.Contract, e.env.Regions(), name, keep, *e.flags.dryRun)
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

func (e *amiRun) smoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ref := args[0]
	s := e.cfg.EC2.Smoke
	f := e.flags
	probeText := cmp.Or(*f.probe, s.Probe)
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
	ami, err := e.resolveAMI(ctx, ref)
	if err != nil {
		return err
	}
	dir := *f.report
	if dir == "" {
		dir = filepath.Join(s.ReportDir, ami+"-"+time.Now().UTC().Format("20060102T150405Z"))
	}
	fmt.Fprintf(stderr, "smoke test of %s in %s: report in %s\n", ami, e.env.Region, dir)
	rep, err := cloud.Smoke(ctx, e.env.EC2(e.env.Region), cloud.SmokeOptions{AMI: ami, Subnet: cmp.Or(*f.subnet, s.Subnet), SecurityGroups: groups,
		InstanceType: cmp.Or(*f.instanceType, s.InstanceType), Probe: probe, ReportDir: dir, Timeout: *f.timeout, Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	fmt.Fprintf(stdout, "%s: %s", ami, rep.Verdict)
	if rep.Reason != "" {
		fmt.Fprintf(stdout, " (%s)", rep.Reason)
	}
	fmt.Fprintf(stdout, "\n  instance %s, %d probes, %d captures, terminated %v; report %s\n", rep.InstanceID, rep.Probes, len(rep.Captures), rep.Terminated, filepath.Join(dir, "report.json"))
	return err
}

// resolveAMI takes an AMI id as it is, and finds NAME@VERSION by its tags in the home region.
func (e *amiRun) resolveAMI(ctx context.Context, ref string) (string, error) {
	if strings.HasPrefix(ref, "ami-") {
		return ref, nil
	}
	r, err := images.ParseRef(ref)
	if err != nil {
		return "", usageError{fmt.Sprintf("%q is neither an AMI id (ami-…) nor NAME@VERSION", ref)}
	}
	return e.env.FindAMI(ctx, r.Name, r.Tag)
}
