package main

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/store"
)

// What differs, by design, between the same command in-process and through the daemon: the
// daemon names the socket's peer beside the operator; times and speeds; tabwriter's padding
// around them.
var (
	socketPeer = regexp.MustCompile(` \(uid \d+ via the control socket\)`)
	clock      = regexp.MustCompile(`\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?|\d\d:\d\d:\d\d\.\d{3}|[+-]\d+\.\d{3}\b|\d+\.\d s(, \S+ MB/s)?`)
	padding    = regexp.MustCompile(`[ \t]+`)
)

func sameness(dir, out string, err error) string {
	if err != nil {
		out += "error: " + err.Error()
	}
	out = strings.ReplaceAll(out, dir, "DIR")
	return padding.ReplaceAllString(clock.ReplaceAllString(socketPeer.ReplaceAllString(out, ""), "T"), " ")
}

// One table of commands run twice over twin setups (a config, its state, a BMC emulator with two
// blades): in-process, with no daemon, and through the daemon's control socket. Every answer and
// every refusal is the same, but for what sameness takes out.
func TestSameAnswerInProcessAndThroughTheDaemon(t *testing.T) {
	local, _ := bmcLab(t)
	remote, _ := bmcLab(t)
	serveConfig(t, remote)
	src := t.TempDir()
	for i, name := range []string{"v1.raw", "v2.raw"} {
		b := make([]byte, (3+i)*images.BlockSize)
		rand.Read(b[images.BlockSize:])
		os.WriteFile(filepath.Join(src, name), b, 0o644)
	}
	file := func(name string) string { return filepath.Join(src, name+".raw") } // $v1, $v2 below
	// One command a line, "!" before one that the API refuses (the same refusal both ways).
	steps := `
image import debian@1 $v1
image import debian@2 $v2
! image import debian@1 $v2
image list
image promote debian@1 stable
image promote debian@2 stable
image rollback debian@stable
! image rollback debian@stable
image show debian@stable
! image show debian@9
image verify debian@2
machines assign ms1-c1n1 debian@stable
! machines assign ms1-c1n9 debian@stable
! image delete debian@1
image delete debian@2
image prune -keep 1
bmc inventory ms1
bmc inventory ms1-c1n2
! bmc inventory ms1-c1n3
! bmc inventory ms9
bmc boot ms1-c1n1 pxe
bmc power ms1-c1n1 on
bmc power ms1-c1n2
! bmc power ms1-c1n3 on
machines list
machines list -json
machines unknown
machines events ms1-c1n1
! machines events ms1-c1n9`
	for _, line := range strings.Split(strings.TrimSpace(steps), "\n") {
		line, fails := strings.CutPrefix(line, "! ")
		args := strings.Fields(os.Expand(line, file))
		name := strings.Join(args, " ")
		in := func(cfg string) []string {
			a := []string{args[0], args[1], "-config", cfg}
			if args[0] != "machines" || args[1] == "assign" { // the commands that change something
				a = append(a, "-by", "alice")
			}
			return append(a, args[2:]...)
		}
		out, _, err := runCmd(t, in(local)...)
		inProcess := sameness(filepath.Dir(local), out, err)
		out, _, err = runCmd(t, in(remote)...)
		daemon := sameness(filepath.Dir(remote), out, err)
		if failed := strings.Contains(inProcess, "error: "); failed != fails {
			t.Errorf("%s: failed %v, want %v:\n%s", name, failed, fails, inProcess)
		}
		if inProcess != daemon {
			t.Errorf("%s:\nin-process:\n%s\nthrough the daemon:\n%s", name, inProcess, daemon)
		}
		if strings.Contains(name, "show debian@stable") && !strings.Contains(daemon, `"by": "alice"`) {
			t.Errorf("%s: the channel's history does not name alice:\n%s", name, daemon)
		}
	}
	// Jobs run only in the daemon: in-process, the API's own refusal and what to do.
	if _, _, err := runCmd(t, "jobs", "list", "-config", local); err == nil || !strings.Contains(err.Error(), "not running in this imaged") || !strings.Contains(err.Error(), "start imaged serve") {
		t.Errorf("jobs list in-process: %v", err)
	}
	if out, _, err := runCmd(t, "jobs", "list", "-config", remote); err != nil || !strings.Contains(out, "(no jobs)") {
		t.Errorf("jobs list through the daemon: %v %s", err, out)
	}
}

// A change made in-process, with no daemon, is in the state the daemon starts with.
func TestInProcessChangesReachTheDaemon(t *testing.T) {
	dir := t.TempDir()
	cfg := imageConfig(t, dir)
	raw := filepath.Join(dir, "os.raw")
	os.WriteFile(raw, make([]byte, images.BlockSize), 0o644)
	for _, args := range [][]string{
		{"image", "import", "-config", cfg, "-by", "alice", "os@1", raw},
		{"image", "promote", "-config", cfg, "-by", "alice", "os@1", "stable"},
		{"machines", "assign", "-config", cfg, "-by", "alice", "ms1-c1n1", "os@stable"},
	} {
		if out, _, err := runCmd(t, args...); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	d := serveConfig(t, cfg)
	img, err := d.catalog.Resolve(images.Ref{Name: "os", Tag: "stable"})
	if err != nil || img.Version != "1" || img.ImportedBy != "alice" {
		t.Fatalf("the daemon's catalog: %+v %v", img, err)
	}
	if m, _ := d.inv.Machine("ms1-c1n1"); m.AssignedImage != img.Digest || m.AssignedChannel != "os@stable" {
		t.Errorf("the daemon's inventory: assigned %s following %q, want %s following os@stable", m.AssignedImage, m.AssignedChannel, img.Digest)
	}
	// And through the daemon, the command answers as it did in-process.
	if out, _, err := runCmd(t, "image", "show", "-config", cfg, "os@stable"); err != nil || !strings.Contains(out, `"by": "alice"`) || !strings.Contains(out, img.Digest.String()) {
		t.Errorf("show through the daemon: %v\n%s", err, out)
	}
}

// With the state file held by another process and no daemon on the control socket, a command
// says so at once instead of waiting or serving a second copy of the state.
func TestStateHeldAndNoDaemon(t *testing.T) {
	dir := t.TempDir()
	cfg := imageConfig(t, dir)
	st, err := store.Open(filepath.Join(dir, "state", "imaged.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, args := range [][]string{{"image", "list"}, {"machines", "assign", "ms1-c1n1", "x@1"}} {
		_, _, err := runCmd(t, append([]string{args[0], args[1], "-config", cfg}, args[2:]...)...)
		if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "no daemon answers on its control socket") {
			t.Errorf("%s: %v", strings.Join(args, " "), err)
		}
	}
}
