package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An assets_dir that would serve what imaged keeps in state_dir is refused, naming the line of
// boot.assets_dir (or of the key at fault) and the fix. Before, assets_dir: <state_dir> passed
// check-config and imaged.db was then served over HTTP and TFTP.
func TestAssetsDirMustNotServeState(t *testing.T) {
	tmp := t.TempDir()
	state := filepath.Join(tmp, "state")
	for _, d := range []string{"images/blobs", "elsewhere", "ipxe"} {
		if err := os.MkdirAll(filepath.Join(state, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(state, "imaged.db"), nil, 0o600)
	os.Symlink(state, filepath.Join(tmp, "state-link"))                   // a path to state_dir through a link
	os.Symlink(filepath.Join(state, "images"), filepath.Join(tmp, "pub")) // a link into the image store

	for _, tc := range []struct {
		name  string
		boot  string // the boot section's keys, one a line; {state} and {tmp} are replaced
		extra string // more top-level config (an http section is merged with public_url)
		want  string // "" for a valid config, else a part of the error
		key   string // the key whose line the error names
	}{
		{"default", "bios_file: undionly.kpxe", "", "", ""},
		{"a directory of its own in state_dir", "assets_dir: {state}/boot", "", "", ""},
		{"a directory of its own elsewhere", "assets_dir: {tmp}/boot", "", "", ""},
		{"not a holding", "assets_dir: {state}/elsewhere", "", "", ""},
		{"state_dir itself", "assets_dir: {state}", "", "is state_dir itself", "assets_dir"},
		{"state_dir with a trailing slash", "assets_dir: {state}/", "", "is state_dir itself", "assets_dir"},
		{"state_dir, not clean", "assets_dir: {state}/images/..", "", "is state_dir itself", "assets_dir"},
		{"state_dir through a symlink", "assets_dir: {tmp}/state-link", "", "is state_dir itself", "assets_dir"},
		{"the parent of state_dir", "assets_dir: {tmp}", "", "holds state_dir", "assets_dir"},
		{"the root", "assets_dir: /", "", "holds state_dir", "assets_dir"},
		{"the image store", "assets_dir: {state}/images", "", "inside state_dir's images", "assets_dir"},
		{"inside the image store", "assets_dir: {state}/images/blobs", "", "inside state_dir's images", "assets_dir"},
		{"inside the image store through a symlink", "assets_dir: {tmp}/pub/blobs", "", "inside state_dir's images", "assets_dir"},
		{"the push journals", "assets_dir: {state}/ami-push", "", "inside state_dir's ami-push", "assets_dir"},
		{"the TLS keys", "assets_dir: {state}/tls", "", "inside state_dir's tls", "assets_dir"},
		{"the database", "assets_dir: {state}/imaged.db", "", "inside state_dir's imaged.db", "assets_dir"},
		{"smoke reports inside it", "assets_dir: {tmp}/boot", "ec2: {smoke: {report_dir: {tmp}/boot/reports}}", "holds ec2.smoke.report_dir", "assets_dir"},
		{"control socket inside it", "assets_dir: {tmp}/boot", "http: {control_socket: {tmp}/boot/c.sock}", "holds http.control_socket", "assets_dir"},
		{"ipxe_dir elsewhere in state_dir", "ipxe_dir: {state}/ipxe", "", "", ""},
		{"ipxe_dir is state_dir, a holding's name", "ipxe_dir: {state}\n  uefi_file: imaged.db", "", "in state_dir's imaged.db", "ipxe_dir"},
		{"ipxe_dir is state_dir, through a symlink", "ipxe_dir: {tmp}/state-link\n  bios_file: imaged.db", "", "in state_dir's imaged.db", "ipxe_dir"},
		{"ipxe_dir in the image store", "ipxe_dir: {state}/images", "", "in state_dir's images", "ipxe_dir"},
		{"a boot program with a directory", "uefi_file: ../state/imaged.db", "", "is not a file name", "uefi_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			http := "http: {public_url: http://127.0.0.1:8080}"
			if strings.HasPrefix(tc.extra, "http: {") {
				http, tc.extra = strings.Replace(tc.extra, "http: {", "http: {public_url: http://127.0.0.1:8080, ", 1), ""
			}
			data := strings.NewReplacer("{state}", state, "{tmp}", tmp).Replace(
				"version: 1\nstate_dir: {state}\n" + http + "\nboot:\n  " + tc.boot + "\n" + tc.extra + "\n")
			_, err := Parse("imaged.yaml", []byte(data))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v\n%s", err, data)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted:\n%s", data)
			}
			at := fmt.Sprintf("imaged.yaml:%d: boot.%s: ", lineOf(t, []byte(data), "  "+tc.key+":"), tc.key)
			if !strings.Contains(err.Error(), at) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "(") {
				t.Errorf("error %q, want %q at %q with a fix", err, tc.want, at)
			}
		})
	}
}
