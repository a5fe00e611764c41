package redfish

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imaged/imaged/internal/power"
)

// TestCredentialsNeverLeak runs successes and every kind of failure with Debug logging and
// checks that neither the logs nor any error text holds the password, the basic-auth header
// value or a session token.
func TestCredentialsNeverLeak(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	withLog := func(c *Client) { c.log = logger.With("bmc", c.cfg.Name) }
	var errs []error
	var fakes []*fakeBMC
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	synctest.Test(t, func(t *testing.T) {
		// Session auth: login, calls, session expiry and re-login, logout.
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		fakes = append(fakes, f)
		c := testClient(t, testConfig(), memTransport{f}, withLog)
		_, err := c.Systems(t.Context())
		keep(err)
		keep(c.Power(t.Context(), "1", power.ActionRestart))
		f.expireSessions()
		keep(c.SetBootOnce(t.Context(), "1", power.Pxe, ""))
		keep(c.Close(t.Context()))
		// Refused login, then refused re-login.
		f.password = "nope"
		_, err = c.Systems(t.Context())
		keep(err)
		// Basic auth against the chassis manager, and its failures.
		m := newFake(t, "moonshot.json", moonshotRules)
		fakes = append(fakes, m)
		c = testClient(t, testConfig(), memTransport{m}, withLog)
		_, err = c.Systems(t.Context())
		keep(err)
		m.password = "nope"
		_, err = c.Systems(t.Context())
		keep(err)
		// 503s, timeouts, garbage.
		g := newFake(t, "ilo5-1.30.json", ilo5v130Rules)
		fakes = append(fakes, g)
		g.hook = func(w http.ResponseWriter, r *http.Request) bool {
			switch {
			case r.URL.Path == "/redfish/v1/Systems/":
				w.Header().Set("Retry-After", "1")
				g.fail(w, http.StatusServiceUnavailable, "Base.1.4.ServiceTemporarilyUnavailable", "")
				return true
			case r.URL.Path == "/redfish/v1/Systems/1/" && r.Method == http.MethodGet:
				<-r.Context().Done()
				return true
			case r.Method == http.MethodPatch:
				w.Write([]byte("{garbage"))
				return true
			}
			return false
		}
		cfg := testConfig()
		cfg.Timeout = time.Second
		c = testClient(t, cfg, memTransport{g}, withLog)
		_, err = c.Systems(t.Context())
		keep(err)
		_, err = c.readSystem(t.Context(), "/redfish/v1/Systems/1/")
		keep(err)
		_, err = c.call(t.Context(), request{method: http.MethodPatch, path: "/redfish/v1/Systems/1/", body: []byte(`{}`)}, new(system))
		keep(err)
	})
	// A refused certificate, over a real socket, through New.
	srv, _ := tlsBMC(t)
	cfg := tlsConfigFor(t, srv, func(*Config) {})
	c, err := New(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Systems(t.Context())
	keep(err)

	if len(errs) != 6 {
		t.Fatalf("%d errors collected, want 6: the scenarios did not fail as planned: %v", len(errs), errs)
	}
	secrets := []string{testPass, base64.StdEncoding.EncodeToString([]byte(testUser + ":" + testPass))}
	for _, f := range fakes {
		secrets = append(secrets, f.issued...)
	}
	if len(secrets) < 4 {
		t.Fatalf("only %d secrets to look for; no sessions were made?", len(secrets))
	}
	var texts []string
	for _, e := range errs {
		texts = append(texts, e.Error(), fmt.Sprintf("%+v", e))
	}
	texts = append(texts, logs.String(), fmt.Sprintf("%v %+v %s", cfg, cfg, cfg))
	var cfgLog bytes.Buffer
	slog.New(slog.NewTextHandler(&cfgLog, nil)).Info("config", "cfg", cfg, "creds", Credentials{testUser, testPass})
	texts = append(texts, cfgLog.String(), fmt.Sprint(Credentials{testUser, testPass}))
	for _, s := range secrets {
		for _, text := range texts {
			if strings.Contains(text, s) {
				t.Errorf("a secret (%.6s…) appears in %.200q", s, text)
			}
		}
	}
	if !strings.Contains(logs.String(), "retrying BMC request") {
		t.Error("the debug log is missing the retries: was it captured?")
	}
}

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "# iLO of ms1\n\nusername: Administrator\npassword:  p@ss: with colon  \n", 0o600)
	c, err := LoadCredentials(good)
	if err != nil || c.Username != "Administrator" || c.Password != "p@ss: with colon" {
		t.Errorf("LoadCredentials = %+v, %v", c, err)
	}
	for name, content := range map[string]string{
		"missing password": "username: a\n",
		"unknown key":      "username: a\npassword: b\nrealm: c\n",
		"bare secret":      "username: a\n" + testPass + "\n",
		"twice":            "username: a\nusername: b\npassword: c\n",
		"empty":            "username:\npassword: b\n",
	} {
		_, err := LoadCredentials(write(name, content, 0o600))
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), testPass) {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
	if _, err := LoadCredentials(write("open", "username: a\npassword: b\n", 0o644)); err == nil {
		t.Error("a world-readable file was accepted")
	}
	if _, err := LoadCredentials(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file = %v", err)
	}

	t.Setenv(EnvUsername, "op")
	t.Setenv(EnvPassword, testPass)
	c, err = LoadCredentials("")
	if err != nil || c.Username != "op" || c.Password != testPass {
		t.Errorf("from the environment: %+v, %v", c, err)
	}
	t.Setenv(EnvPassword, "")
	if _, err := LoadCredentials(""); err == nil {
		t.Error("an unset password was accepted")
	}
}
