package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/cloud"
	"github.com/imaged/imaged/internal/cloud/awsfake"
)

// `imaged ami push` publishes a catalog image to the (fake) EC2 with the SDK's default chain
// for credentials, and a second push finds it by its digest.
func TestAMIPush(t *testing.T) {
	awsEnv(t)
	dir := t.TempDir()
	cfg := imageConfig(t, dir)
	raw := filepath.Join(dir, "img.raw")
	data := mbrDisk(6 << 20)
	copy(data[2<<20:], strings.Repeat("imaged", 100000))
	os.WriteFile(raw, data, 0o644)
	if out, _, err := runCmd(t, "image", "import", "-config", cfg, "labos@1", raw); err != nil {
		t.Fatalf("import: %v %s", err, out)
	}
	f := awsfake.New(awsfake.Options{SnapshotCompletionDelay: 10 * time.Millisecond, ImageAvailableDelay: 10 * time.Millisecond})
	srv := f.Start(t)
	out, _, err := runCmd(t, "ami", "push", "-config", cfg, "-endpoint", srv.URL, "labos@1")
	if err != nil || !strings.Contains(out, "published in eu-west-1: ami-") || !strings.Contains(out, "3 blocks sent (0 resumed), 9 zero blocks skipped") {
		t.Fatalf("ami push: %v\n%s", err, out)
	}
	ims := f.Images("eu-west-1")
	if len(ims) != 1 || ims[0].Tags[cloud.TagName] != "labos" || ims[0].Tags[cloud.TagVersion] != "1" || ims[0].Architecture != "x86_64" {
		t.Fatalf("images in eu-west-1: %+v", ims)
	}
	out, _, err = runCmd(t, "ami", "push", "-config", cfg, "-endpoint", srv.URL, "labos@1")
	if err != nil || !strings.Contains(out, "already published in eu-west-1: "+ims[0].ID) {
		t.Errorf("second push: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, "ami", "push", "-config", cfg, "-endpoint", srv.URL, "labos@9"); err == nil {
		t.Error("push of a missing image succeeded")
	}
	// Bad flags are refused before anything reaches AWS, naming the flag.
	puts := f.RequestCount("StartSnapshot")
	for flag, args := range map[string][]string{
		"-copy-to":   {"-copy-to", "eu-west-2,eu_central"},
		"-region":    {"-region", "Frankfurt"},
		"-workers":   {"-workers", "5000"},
		"-boot-mode": {"-boot-mode", "bios"},
	} {
		_, _, err := runCmd(t, append(append([]string{"ami", "push", "-config", cfg, "-endpoint", srv.URL}, args...), "labos@1")...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), flag) {
			t.Errorf("%v: %v (exit %d)", args, err, exitCode(err))
		}
	}
	if f.RequestCount("StartSnapshot") != puts {
		t.Error("a refused push reached EBS")
	}
}

// Each subcommand takes its own number of arguments, and a command that could never work is a
// usage error (exit 2) that says why, before anything reaches AWS.
func TestAMIUsage(t *testing.T) {
	awsEnv(t)
	cfg := imageConfig(t, t.TempDir())
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"push"}, "usage: imaged ami push"},
		{[]string{"push", "a@1", "b@1"}, "usage: imaged ami push"},
		{[]string{"list", "a", "b"}, "usage: imaged ami list"},
		{[]string{"promote", "a@1"}, "usage: imaged ami promote"},
		{[]string{"rollback"}, "usage: imaged ami rollback"},
		{[]string{"smoke", "a@1", "ami-1"}, "usage: imaged ami smoke"},
		{[]string{"prune", "-keep", "-1"}, "-keep -1"},
		{[]string{"rollback", "a@stable"}, "no published contract"},
		{[]string{"rollback", "-contract", "s3://bucket", "a@stable"}, "-contract"},
		{[]string{"smoke", "-probe", "tcp:22", "latest"}, "neither an AMI id"},
	} {
		args := append([]string{"ami", tc.args[0], "-config", cfg, "-endpoint", "http://127.0.0.1:1"}, tc.args[1:]...)
		if _, _, err := runCmd(t, args...); exitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), tc.says) {
			t.Errorf("imaged %s: %v (exit %d), want a usage error saying %q", strings.Join(tc.args, " "), err, exitCode(err), tc.says)
		}
	}
	t.Setenv("AWS_REGION", "")
	if _, _, err := runCmd(t, "ami", "list", "-config", cfg); exitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), "no AWS region: give -region") {
		t.Errorf("no region anywhere: %v (exit %d)", err, exitCode(err))
	}
}

// mbrDisk is a disk image of size bytes that BIOS firmware would boot: boot code and the
// signature in its MBR (push reads the boot mode from the image).
func mbrDisk(size int) []byte {
	d := make([]byte, size)
	copy(d, []byte{0xeb, 0x63, 0x90})
	d[510], d[511] = 0x55, 0xaa
	return d
}

// awsEnv gives the SDK's default chain static credentials and eu-west-1, and nothing else.
func awsEnv(t *testing.T) {
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1",
		"AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull, "AWS_EC2_METADATA_DISABLED": "true"} {
		t.Setenv(k, v)
	}
}

// The operator's whole EC2 story through the CLI: three versions pushed to eu-west-1 and copied
// to eu-central-1, promoted into amis.json, rolled back, and pruned down to what is newest and
// what the channel points at, in both regions.
func TestAMIChannels(t *testing.T) {
	awsEnv(t)
	dir := t.TempDir()
	cfg := imageConfig(t, dir)
	f := awsfake.New(awsfake.Options{Buckets: []string{"release-amis"}})
	srv := f.Start(t)
	common := []string{"-config", cfg, "-endpoint", srv.URL, "-copy-to", "eu-central-1"}
	contract := append(common, "-contract", "s3://release-amis/amis.json")
	run := func(args ...string) string {
		t.Helper()
		out, errOut, err := runCmd(t, args...)
		if err != nil {
			t.Fatalf("imaged %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	for v := 1; v <= 3; v++ {
		raw := filepath.Join(dir, fmt.Sprintf("v%d.raw", v))
		data := mbrDisk(4 << 20)
		copy(data[1<<20:], strings.Repeat(fmt.Sprintf("version %d ", v), 50000))
		os.WriteFile(raw, data, 0o644)
		run("image", "import", "-config", cfg, fmt.Sprintf("labos@%d", v), raw)
		out := run(append(append([]string{"ami", "push"}, common...), fmt.Sprintf("labos@%d", v))...)
		if !strings.Contains(out, "copied into eu-central-1: ami-") {
			t.Fatalf("push of labos@%d:\n%s", v, out)
		}
	}
	amiOf := func(region, version string) string {
		for _, im := range f.Images(region) {
			if im.Tags[cloud.TagVersion] == version {
				return im.ID
			}
		}
		return ""
	}
	contractDoc := func() *cloud.AMIs {
		o, ok := f.Object("release-amis", "amis.json")
		if !ok {
			t.Fatal("no amis.json in the bucket")
		}
		doc, err := cloud.ParseAMIs(o.Data)
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	run(append(append([]string{"ami", "promote"}, contract...), "labos@1", "stable")...)
	run(append(append([]string{"ami", "promote"}, contract...), "labos@2", "stable")...)
	if e, _ := contractDoc().Current("labos", "stable"); e.Version != "2" || e.AMIs["eu-west-1"] != amiOf("eu-west-1", "2") || e.AMIs["eu-central-1"] != amiOf("eu-central-1", "2") {
		t.Fatalf("stable after two promotes: %+v", e)
	}
	out := run(append(append([]string{"ami", "rollback"}, contract...), "labos@stable")...)
	if e, _ := contractDoc().Current("labos", "stable"); e.Version != "1" || !strings.Contains(out, "rolled back from 2 to 1") {
		t.Fatalf("stable after rollback: %+v\n%s", e, out)
	}
	out = run(append(append([]string{"ami", "list"}, contract...), "labos")...)
	if strings.Count(out, "\neu-") != 6 || !strings.Contains(out, amiOf("eu-central-1", "1")+"  available") ||
		!regexp.MustCompile(amiOf("eu-west-1", "1")+`.*labos@stable`).MatchString(out) {
		t.Errorf("ami list:\n%s", out)
	}
	// keep 1: version 3 is the newest, version 1 is what stable points at; version 2 goes.
	out = run(append(append([]string{"ami", "prune"}, contract...), "-keep", "1", "labos")...)
	for _, region := range []string{"eu-west-1", "eu-central-1"} {
		if amiOf(region, "1") == "" || amiOf(region, "3") == "" || amiOf(region, "2") != "" || len(f.Images(region)) != 2 {
			t.Errorf("after prune in %s: %d images (v1 %q, v2 %q, v3 %q)\n%s", region, len(f.Images(region)), amiOf(region, "1"), amiOf(region, "2"), amiOf(region, "3"), out)
		}
	}
	if _, _, err := runCmd(t, append(append([]string{"ami", "promote"}, contract...), "labos@9", "stable")...); err == nil {
		t.Error("promoting a version that does not exist succeeded")
	}
}

// `imaged ami smoke NAME@VERSION`: the AMI found by its tags, launched, probed (the fake's
// instances answer on 127.0.0.1, where the test listens), terminated; a probe nobody answers
// fails the command, still terminates the instance, and leaves the console captures.
func TestAMISmoke(t *testing.T) {
	awsEnv(t)
	dir := t.TempDir()
	cfg := imageConfig(t, dir)
	raw := filepath.Join(dir, "img.raw")
	data := mbrDisk(2 << 20)
	os.WriteFile(raw, data, 0o644)
	if out, _, err := runCmd(t, "image", "import", "-config", cfg, "labos@1", raw); err != nil {
		t.Fatalf("import: %v %s", err, out)
	}
	f := awsfake.New(awsfake.Options{InstancePrivateIP: netip.MustParseAddr("127.0.0.1"), ConsoleOutput: "labos login:"})
	srv := f.Start(t)
	if out, errOut, err := runCmd(t, "ami", "push", "-config", cfg, "-endpoint", srv.URL, "-copy-to", "-", "labos@1"); err != nil {
		t.Fatalf("push: %v\n%s%s", err, out, errOut)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	pass := filepath.Join(dir, "pass")
	out, errOut, err := runCmd(t, "ami", "smoke", "-config", cfg, "-endpoint", srv.URL, "-subnet", "subnet-0abc", "-security-group", "sg-0abc",
		"-probe", fmt.Sprintf("tcp:%d", port), "-report", pass, "labos@1")
	if err != nil || !strings.Contains(out, ": pass") {
		t.Fatalf("smoke against a listener: %v\n%s%s", err, out, errOut)
	}
	closed := port
	ln.Close() // now nothing answers
	fail := filepath.Join(dir, "fail")
	out, _, err = runCmd(t, "ami", "smoke", "-config", cfg, "-endpoint", srv.URL, "-probe", fmt.Sprintf("tcp:%d", closed), "-timeout", "2s", "-report", fail, "labos@1")
	if !errors.Is(err, cloud.ErrSmokeFailed) || !strings.Contains(out, ": fail") {
		t.Fatalf("smoke against nothing: %v\n%s", err, out)
	}
	for _, in := range f.Instances("eu-west-1") {
		if in.State != "terminated" && in.State != "shutting-down" {
			t.Errorf("instance %s left %s", in.ID, in.State)
		}
	}
	if len(f.Instances("eu-west-1")) != 2 {
		t.Errorf("%d instances launched, want 2", len(f.Instances("eu-west-1")))
	}
	consoles, _ := filepath.Glob(filepath.Join(fail, "console-*.txt"))
	shots, _ := filepath.Glob(filepath.Join(fail, "screenshot-*.jpg"))
	rep, _ := os.ReadFile(filepath.Join(fail, "report.json"))
	if len(consoles) < 2 || len(shots) < 2 || !strings.Contains(string(rep), `"verdict": "fail"`) {
		t.Errorf("report dir: %d consoles, %d screenshots, report %s", len(consoles), len(shots), rep)
	}
}
