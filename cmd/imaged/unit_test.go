package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/imaged/imaged/internal/config"
)

// TestSystemdUnit checks the shipped unit with systemd's own tools: it must verify cleanly, be
// Type=notify (serve sends READY=1), and its hardening must rate as low exposure.
func TestSystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not found: CI must have systemd installed")
		}
		t.Skip("skipping: systemd-analyze not found (apt-get install systemd)")
	}
	unit, err := os.ReadFile("../../systemd/imaged.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "User=imaged", "StateDirectory=imaged", "ProtectSystem=strict",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW", "ExecStartPre=/usr/local/bin/imaged check-config"} {
		if !strings.Contains(string(unit), want+"\n") && !strings.Contains(string(unit), want+" ") {
			t.Errorf("unit lacks %q", want)
		}
	}
	// verify insists that ExecStart exists: point it at an executable that does.
	dir := t.TempDir()
	p := filepath.Join(dir, "imaged.service")
	os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/imaged", "/bin/true")), 0o644)
	if out, err := exec.Command(sa, "verify", "--man=no", p).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(sa, "security", "--offline=true", p).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for imaged.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 3.0 {
		t.Errorf("exposure level %.1f, want ≤ 3.0 (OK)\n%s", score, out)
	}
}

// TestSystemdInstall runs the real systemd-sysusers and systemd-tmpfiles on the shipped
// systemd/imaged.sysusers and systemd/imaged.tmpfiles against a scratch root, as an install
// does on the host, and checks that what they make is what the unit and the config's defaults
// expect: the unit's User and Group exist as a system user with no shell, the state directory
// (StateDirectory=, with StateDirectoryMode=) and the boot assets in it belong to that user, and
// the config's directory is root's to write and the group's to read. Both run twice: the second
// run changes nothing.
func TestSystemdInstall(t *testing.T) {
	var tools []string
	for _, name := range []string{"systemd-sysusers", "systemd-tmpfiles"} {
		p, err := exec.LookPath(name)
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not found: CI must have systemd installed", name)
			}
			t.Skipf("skipping: %s not found (apt-get install systemd)", name)
		}
		tools = append(tools, p)
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: systemd-tmpfiles --create gives directories to imaged's user, which needs root")
	}
	unitText, err := os.ReadFile("../../systemd/imaged.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := unitSettings(string(unitText))
	for _, k := range []string{"User", "Group", "StateDirectory", "StateDirectoryMode", "ExecStart"} {
		if unit[k] == "" {
			t.Fatalf("imaged.service has no %s=", k)
		}
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	sysusers, _ := filepath.Abs("../../systemd/imaged.sysusers")
	tmpfiles, _ := filepath.Abs("../../systemd/imaged.tmpfiles")
	var passwd, group []byte
	for i := range 2 {
		if out, err := exec.Command(tools[0], "--root="+root, sysusers).CombinedOutput(); err != nil {
			t.Fatalf("systemd-sysusers: %v\n%s", err, out)
		}
		if out, err := exec.Command(tools[1], "--root="+root, "--create", tmpfiles).CombinedOutput(); err != nil {
			t.Fatalf("systemd-tmpfiles --create: %v\n%s", err, out)
		}
		before := passwd
		if passwd, err = os.ReadFile(filepath.Join(root, "etc/passwd")); err != nil {
			t.Fatal(err)
		}
		if i == 1 && !bytes.Equal(passwd, before) {
			t.Errorf("a second run changed /etc/passwd:\n%s\nwas\n%s", passwd, before)
		}
	}
	group, err = os.ReadFile(filepath.Join(root, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}

	// The user and group.
	user, grp := dbEntry(string(passwd), unit["User"]), dbEntry(string(group), unit["Group"])
	if user == nil || grp == nil {
		t.Fatalf("no user %q or group %q after systemd-sysusers", unit["User"], unit["Group"])
	}
	uid, _ := strconv.Atoi(user[2])
	gid, _ := strconv.Atoi(grp[2])
	if uid == 0 || uid >= 1000 || user[3] != grp[2] {
		t.Errorf("user %v: want a system user (uid 1-999) whose group is %s (gid %d)", user, unit["Group"], gid)
	}
	stateDir := "/var/lib/" + unit["StateDirectory"]
	if user[5] != stateDir || !strings.HasSuffix(user[6], "/nologin") {
		t.Errorf("user %v: want home %s and no login shell", user, stateDir)
	}

	// The directories, as the unit and the config's defaults name them.
	def, err := config.Parse("defaults.yaml", []byte("version: 1\nhttp: {public_url: http://10.99.0.1:8080}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if def.StateDir != stateDir {
		t.Errorf("the config's default state_dir is %s, the unit's StateDirectory %s", def.StateDir, stateDir)
	}
	stateMode, err := strconv.ParseUint(unit["StateDirectoryMode"], 8, 32)
	if err != nil {
		t.Fatalf("StateDirectoryMode=%q: %v", unit["StateDirectoryMode"], err)
	}
	configDir := ""
	if m := regexp.MustCompile(`-config (\S+)`).FindStringSubmatch(unit["ExecStart"]); m != nil {
		configDir = filepath.Dir(m[1])
	}
	for _, d := range []struct {
		path     string
		uid, gid int
		mode     os.FileMode
		why      string
	}{
		{stateDir, uid, gid, os.FileMode(stateMode), "StateDirectory= with StateDirectoryMode="},
		{def.Boot.AssetsDir, uid, gid, 0o750, "boot.assets_dir: the daemon copies the iPXE programs in"},
		{configDir, 0, gid, 0o750, "the config's directory (ExecStart's -config): root writes, the daemon reads"},
	} {
		fi, err := os.Stat(filepath.Join(root, d.path))
		if err != nil {
			t.Errorf("%s (%s): %v", d.path, d.why, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || fi.Mode().Perm() != d.mode || int(st.Uid) != d.uid || int(st.Gid) != d.gid {
			t.Errorf("%s (%s) is %v %d:%d, want %v %d:%d", d.path, d.why, fi.Mode(), st.Uid, st.Gid, d.mode|os.ModeDir, d.uid, d.gid)
		}
	}
}

// unitSettings are a unit's Key=Value lines (the last one of each key).
func unitSettings(unit string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			m[k] = v
		}
	}
	return m
}

// dbEntry is the colon-separated fields of name's line in an /etc/passwd-style file's text.
func dbEntry(db, name string) []string {
	for _, line := range strings.Split(db, "\n") {
		if f := strings.Split(line, ":"); f[0] == name {
			return f
		}
	}
	return nil
}
