package cloud

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/imaged/imaged/internal/atomicfile"
)

// startCaptures captures on the schedule from launched until finish, which then captures once
// more (the screen at the verdict) even if ctx is done.
func (s *smoke) startCaptures(ctx context.Context, launched time.Time) (finish func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.capture(ctx)
			next := nextCapture(time.Since(launched), s.opt.FastEvery, s.opt.FastFor, s.opt.SlowEvery)
			t.Reset(time.Until(launched.Add(next)))
		}
	}()
	return func() {
		close(stop)
		<-done
		s.capture(context.WithoutCancel(ctx))
	}
}

// nextCapture is the first capture time (after launch) later than elapsed: multiples of fastEvery
// up to fastFor, then fastFor plus multiples of slowEvery. Rounds that were missed are skipped.
func nextCapture(elapsed, fastEvery, fastFor, slowEvery time.Duration) time.Duration {
	if elapsed < fastFor {
		return min((elapsed/fastEvery+1)*fastEvery, fastFor)
	}
	return fastFor + ((elapsed-fastFor)/slowEvery+1)*slowEvery
}

// capture writes console-NNNN.txt and screenshot-NNNN.jpg. A failure is recorded, not fatal:
// screenshots, for one, are not supported everywhere.
func (s *smoke) capture(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, captureTimeout)
	defer cancel()
	s.seq++
	text, err := s.consoleOutput(ctx)
	s.record("console", fmt.Sprintf("console-%04d.txt", s.seq), text, err)
	img, err := s.screenshot(ctx)
	s.record("screenshot", fmt.Sprintf("screenshot-%04d.jpg", s.seq), img, err)
}

func (s *smoke) consoleOutput(ctx context.Context) ([]byte, error) {
	in := &ec2.GetConsoleOutputInput{InstanceId: aws.String(s.rep.InstanceID), Latest: aws.Bool(s.latest)}
	out, err := s.c.GetConsoleOutput(ctx, in)
	var ae smithy.APIError
	if err != nil && s.latest && errors.As(err, &ae) {
		// Latest "is supported on instance types that use the Nitro hypervisor"; the others have
		// only the output buffered around state transitions.
		in.Latest = aws.Bool(false)
		if buffered, err2 := s.c.GetConsoleOutput(ctx, in); err2 == nil {
			s.latest = false
			s.event("console: latest output refused (%v); capturing the buffered output", err)
			out, err = buffered, nil
		}
	}
	if err != nil {
		return nil, err
	}
	// "The console output, base64-encoded." Absent until the instance has posted any.
	return base64.StdEncoding.DecodeString(aws.ToString(out.Output))
}

func (s *smoke) screenshot(ctx context.Context) ([]byte, error) {
	// Never WakeUp: it is a keystroke, and could answer a boot prompt.
	out, err := s.c.GetConsoleScreenshot(ctx, &ec2.GetConsoleScreenshotInput{InstanceId: aws.String(s.rep.InstanceID)})
	if err != nil {
		return nil, err
	}
	img, err := base64.StdEncoding.DecodeString(aws.ToString(out.ImageData))
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(img, []byte{0xff, 0xd8, 0xff}) {
		return nil, fmt.Errorf("screenshot is not a JPEG (%d bytes)", len(img))
	}
	return img, nil
}

func (s *smoke) record(kind, name string, data []byte, err error) {
	c := SmokeCapture{Time: time.Now(), Kind: kind, Bytes: len(data)}
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(s.opt.ReportDir, name), data, 0o644)
	}
	if err != nil {
		c.Error = err.Error()
		s.log.Debug("smoke: capture failed", "kind", kind, "err", err)
	} else {
		c.File = name
	}
	s.mu.Lock()
	s.rep.Captures = append(s.rep.Captures, c)
	s.mu.Unlock()
}
