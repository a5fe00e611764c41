package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/cloud"
	"github.com/imaged/imaged/internal/cloud/awsfake"
)

// `imaged ami push` publishes a catalog image to the (fake) EC2 with the SDK's default chain
// for credentials, and a second push finds it by its digest.
func TestAMIPush(t *testing.T) {
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1",
		"AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull, "AWS_EC2_METADATA_DISABLED": "true"} {
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	cfg := imageConfig(t, dir)
	raw := filepath.Join(dir, "img.raw")
	data := make([]byte, 6<<20)
	copy(data[2<<20:], strings.Repeat("imaged", 100000))
	os.WriteFile(raw, data, 0o644)
	if out, _, err := runCmd(t, "image", "import", "-config", cfg, "labos@1", raw); err != nil {
		t.Fatalf("import: %v %s", err, out)
	}
	f := awsfake.New(awsfake.Options{SnapshotCompletionDelay: 10 * time.Millisecond, ImageAvailableDelay: 10 * time.Millisecond})
	srv := f.Start(t)
	out, _, err := runCmd(t, "ami", "push", "-config", cfg, "-endpoint", srv.URL, "labos@1")
	if err != nil || !strings.Contains(out, "published in eu-west-1: ami-") || !strings.Contains(out, "2 blocks sent, 10 zero blocks skipped") {
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
}
