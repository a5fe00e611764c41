package main

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/progress"
	"github.com/imaged/imaged/internal/cloud"
	"github.com/imaged/imaged/internal/config"
)

// cmdAMI publishes catalog images to EC2. (Today: push; copy to other regions, the published
// amis.json, promotion, pruning and smoke tests follow.)
func cmdAMI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "ami", "push")
	if err != nil {
		return err
	}
	fs := newFlags("ami "+sub, stderr)
	path := configFlag(fs)
	region := fs.String("region", "", "the AWS region (default: the SDK's, from the environment or ~/.aws/config)")
	endpoint := fs.String("endpoint", "", "an EC2/EBS-compatible endpoint instead of AWS's (tests, private clouds)")
	workers := fs.Int("workers", 64, "blocks in flight")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"usage: imaged ami push [flags] NAME@VERSION|NAME@CHANNEL|sha256:DIGEST"}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	c, err := openCatalog(cfg, true, operator())
	if err != nil {
		return err
	}
	defer c.close()
	info, err := c.info(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	d, err := images.ParseDigest(info.Image.Digest)
	if err != nil {
		return err
	}
	m, err := c.blobs.Manifest(d)
	if err != nil {
		return err
	}
	blob, err := c.blobs.Open(d)
	if err != nil {
		return err
	}
	defer blob.Close()

	// The SDK's default credential chain: environment, shared files, SSO, instance roles.
	var lo []func(*awsconfig.LoadOptions) error
	if *region != "" {
		lo = append(lo, awsconfig.WithRegion(*region))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return fmt.Errorf("AWS config: %w", err)
	}
	if ac.Region == "" {
		return usageError{"no AWS region: give -region or set AWS_REGION"}
	}
	// The SDK's own client (its dial and TLS timeouts, the environment's proxy), with enough idle
	// connections for every worker to keep its own.
	ac.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConnsPerHost, tr.MaxIdleConns = *workers, 2**workers
	})
	e := ebs.NewFromConfig(ac, func(o *ebs.Options) {
		if *endpoint != "" {
			o.BaseEndpoint = aws.String(*endpoint)
		}
		o.RetryMaxAttempts = 1 // PushSnapshot retries each block itself, with its own backoff
	})
	ec := ec2.NewFromConfig(ac, func(o *ec2.Options) {
		if *endpoint != "" {
			o.BaseEndpoint = aws.String(*endpoint)
		}
	})
	nz, _ := m.NonZero()
	bar := progress.New(stderr, int64(nz)*images.BlockSize, progress.Options{Desc: "push " + info.Image.Ref()})
	pub, err := cloud.PublishAMI(ctx, e, ec, cloud.Image{Name: info.Image.Name, Version: info.Image.Version, Manifest: m,
		ManifestHash: info.Image.ManifestHash, Blob: blob}, cloud.PublishOptions{Region: ac.Region,
		Push: cloud.PushOptions{Workers: *workers, Progress: func(done, _ int) { bar.Set(int64(done) * images.BlockSize) }}})
	bar.Finish(err)
	if err != nil {
		return err
	}
	if pub.Existing {
		fmt.Fprintf(stdout, "%s (%s) is already published in %s: %s\n", info.Image.Ref(), info.Image.Digest, pub.Region, pub.AMI)
		return nil
	}
	p := pub.Push
	fmt.Fprintf(stdout, "%s (%s) published in %s: %s from snapshot %s\n  %d blocks sent, %d zero blocks skipped, %d retried, %.1f s (%.0f MB/s)\n",
		info.Image.Ref(), info.Image.Digest, pub.Region, pub.AMI, pub.SnapshotID, p.Blocks, p.Skipped, p.Retries,
		p.Duration.Seconds(), float64(p.BytesPushed)/p.Duration.Seconds()/1e6)
	return nil
}
