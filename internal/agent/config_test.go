package agent

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	const base = "BOOT_IMAGE=vmlinuz initrd=initrd.img console=ttyS0 "
	for _, tc := range []struct {
		name    string
		cmdline string
		server  string
		token   string
		mac     string
		modules bool
		debug   bool
		wantErr []string // substrings; empty means success
	}{
		{name: "ok", cmdline: base + "imaged.server=http://10.99.0.1:8080 imaged.token=tok1 imaged.mac=52:54:00:99:00:11",
			server: "http://10.99.0.1:8080", token: "tok1", mac: "52:54:00:99:00:11", modules: true},
		{name: "quoted, dashes, options, init args", cmdline: `imaged.server="https://imaged.example:8443/base/" imaged.tls_sha256=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef imaged.token="a b" imaged.mac=52-54-00-AA-BB-CC imaged.modules=0 imaged.debug=1 quiet -- imaged.token=ignored`,
			server: "https://imaged.example:8443/base/", token: "a b", mac: "52:54:00:aa:bb:cc", modules: false, debug: true},
		{name: "iPXE newline at end", cmdline: "imaged.server=http://h imaged.token=t imaged.mac=52:54:00:00:00:01\n",
			server: "http://h", token: "t", mac: "52:54:00:00:00:01", modules: true},
		{name: "missing server", cmdline: base + "imaged.token=t imaged.mac=52:54:00:00:00:01", wantErr: []string{"imaged.server"}},
		{name: "missing everything, token stays secret", cmdline: "console=ttyS0", wantErr: []string{"imaged.server, imaged.token, imaged.mac"}},
		{name: "missing mac", cmdline: "imaged.server=http://h imaged.token=secret", wantErr: []string{"lacks imaged.mac", "imaged.token=<redacted>"}},
		{name: "empty token", cmdline: "imaged.server=http://h imaged.token= imaged.mac=52:54:00:00:00:01", wantErr: []string{"imaged.token is empty"}},
		{name: "bad URL", cmdline: "imaged.server=http://[::1 imaged.token=t imaged.mac=52:54:00:00:00:01", wantErr: []string{"imaged.server", "not a URL"}},
		{name: "URL without scheme", cmdline: "imaged.server=10.99.0.1:8080 imaged.token=t imaged.mac=52:54:00:00:00:01", wantErr: []string{"imaged.server=\"10.99.0.1:8080\"", "http://"}},
		{name: "ftp URL", cmdline: "imaged.server=ftp://h imaged.token=t imaged.mac=52:54:00:00:00:01", wantErr: []string{"imaged.server"}},
		{name: "bad MAC", cmdline: "imaged.server=http://h imaged.token=t imaged.mac=52:54:00:zz:00:01", wantErr: []string{"imaged.mac=\"52:54:00:zz:00:01\""}},
		{name: "InfiniBand MAC", cmdline: "imaged.server=http://h imaged.token=t imaged.mac=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", wantErr: []string{"imaged.mac"}},
		{name: "unexpanded iPXE variable", cmdline: "imaged.server=http://h imaged.token=t imaged.mac=${net0/mac}", wantErr: []string{"imaged.mac"}},
		{name: "bad modules flag", cmdline: "imaged.server=http://h imaged.token=t imaged.mac=52:54:00:00:00:01 imaged.modules=maybe", wantErr: []string{"imaged.modules"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseCmdline(tc.cmdline)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error; got %+v", cfg)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error leaks the token: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []any{cfg.Server.String(), cfg.Token, cfg.MAC.String(), cfg.Modules, cfg.Debug}
			want := []any{tc.server, tc.token, tc.mac, tc.modules, tc.debug}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestHelloURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://10.99.0.1:8080":            "http://10.99.0.1:8080/agent/v1/hello",
		"http://10.99.0.1:8080/":           "http://10.99.0.1:8080/agent/v1/hello",
		"https://imaged.example/base/path": "https://imaged.example/base/path/agent/v1/hello",
	} {
		pin := ""
		if strings.HasPrefix(in, "https:") {
			pin = " imaged.tls_sha256=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		}
		cfg, err := ParseCmdline("imaged.server=" + in + pin + " imaged.token=t imaged.mac=52:54:00:00:00:01")
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Server.JoinPath(HelloPath).String(); got != want {
			t.Errorf("%s: hello URL %s, want %s", in, got, want)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("imaged.server=http://10.99.0.1:8080 imaged.token=tok imaged.mac=52:54:00:99:00:11")
	f.Add(`imaged.server="http://a b" imaged.token="x -- imaged.mac=1" --`)
	f.Add("imaged.mac=52:54:00:99:00:11 imaged.mac=zz imaged.modules")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseCmdline(s)
		if err != nil {
			return
		}
		if err := cfg.validate(); err != nil {
			t.Fatalf("ParseCmdline(%q) accepted an invalid config: %v", s, err)
		}
		if len(cfg.MAC) != 6 || (cfg.Server.Scheme != "http" && cfg.Server.Scheme != "https") {
			t.Fatalf("ParseCmdline(%q) = %+v", s, cfg)
		}
	})
}
