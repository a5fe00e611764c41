package redfish

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// FuzzDecode feeds every decoder of BMC answers: the service root and the quirk table behind it,
// collections, systems (IDs, MACs, boot and reset fields), NICs, ActionInfo and error envelopes.
// Seeds are the resources of testdata and the error bodies the fakes send.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var res map[string]json.RawMessage
		if err := json.Unmarshal(b, &res); err != nil {
			f.Fatal(err)
		}
		for _, doc := range res {
			f.Add([]byte(doc))
		}
	}
	f.Add([]byte(`{"error":{"code":"iLO.0.10.ExtendedInfo","message":"See @Message.ExtendedInfo for more information.","@Message.ExtendedInfo":[{"MessageId":"Base.1.4.Success"}]}}`))
	f.Add([]byte(`{"error":{"@Message.ExtendedInfo":[{"MessageId":"Base.1.4.PropertyValueNotInList","MessageArgs":["Cd",3]}]}}`))
	f.Add([]byte(`{"Parameters":[{"Name":"ResetType","AllowableValues":["On","ForceOff"]}]}`))
	f.Add([]byte(`{"Id":"c1n1","HostCorrelation":{"HostMACAddress":["zz","00:00:00:00:00:00","01:02:03:04:05:06:07:08"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var root serviceRoot
		if decode(b, &root) == nil {
			q := quirksFor(root.identity())
			if q.Name == "" {
				t.Error("quirk entry without a name")
			}
			_ = root.sessionsPath()
		}
		var col collection
		_ = decode(b, &col)
		if s, err := decodeSystem(b); err == nil {
			if systemID(s) == "" && s.ID != "" {
				t.Errorf("system %q got an empty ID", s.ID)
			}
			for _, hw := range parseMACs(s.HostCorrelation.HostMACAddress, map[string]bool{}) {
				if len(hw) != 6 || zeroMAC(hw) {
					t.Errorf("kept MAC %v", hw)
				}
			}
			_ = powerState(s.PowerState)
			_ = bootTarget(s.Boot.BootSourceOverrideTarget)
			_ = s.bootTargets()
		}
		var nic ethernetInterface
		_ = decode(b, &nic)
		var ai actionInfo
		if decode(b, &ai) == nil {
			_ = ai.allowable("ResetType")
		}
		r := &response{status: 400, body: b, path: "/x"}
		e := r.httpError("GET")
		if len(e.Message) > maxMessage+len("…") || len(e.MessageID) > maxMessage+len("…") {
			t.Errorf("message not clipped: %d bytes", len(e.Message))
		}
		_ = e.Error()
		_ = successEnvelope(b)
	})
}

// FuzzRetryAfter: any header value gives a non-negative wait or none.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"7", "0", "Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "-1", "99999999999", ""} {
		f.Add(s)
	}
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := retryAfter(v, now)
		if d < 0 || (!ok && d != 0) {
			t.Errorf("retryAfter(%q) = %s, %v", v, d, ok)
		}
		if ok && strings.TrimSpace(v) == "" {
			t.Errorf("retryAfter(%q) accepted blank", v)
		}
	})
}

// FuzzCredentials feeds the BMC credentials file parser. Whatever the file holds: no panic; a
// login it accepts has both fields, without surrounding blanks or line breaks, and reads back
// the same once written out again; a refusal names its line (or says what is missing) and never
// shows the password, wherever the password line sits; the login's String and LogValue never show
// it either.
func FuzzCredentials(f *testing.F) {
	for _, s := range []string{
		"username: Administrator\npassword: p@ss: with colon\n",
		"# iLO of ms1\n\nUsername:  admin \r\nPASSWORD:\tsecret\r\n",
		"password: b\nusername: a",
		"username: a\n",
		"username: a\npassword: b\nrealm: c\n",
		"username: a\nusername: b\npassword: c\n",
		"username:\npassword: b\n",
		"username: a\nbare-secret-line\n",
		"\ufeffusername: a\npassword: b\n",
		"",
	} {
		f.Add([]byte(s))
	}
	const secret = "Zq8-fuzz-secret-7Hw"
	lineErr := regexp.MustCompile(`^line [0-9]+: |^want both a username: and a password: line$`)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseCredentials(b)
		if err == nil {
			for _, v := range []string{c.Username, c.Password} {
				if v == "" || v != strings.TrimSpace(v) || strings.ContainsAny(v, "\r\n") {
					t.Fatalf("accepted %q: field %q", b, v)
				}
			}
			again, err := parseCredentials([]byte("username: " + c.Username + "\npassword: " + c.Password + "\n"))
			if err != nil || again != c {
				t.Fatalf("%+v written out reads back as %+v, %v", c, again, err)
			}
		} else if !lineErr.MatchString(err.Error()) {
			t.Errorf("error %q names no line", err)
		}
		for _, in := range [][]byte{
			append([]byte("password: "+secret+"\n"), b...),
			append(append([]byte{}, b...), "\npassword: "+secret+"\n"...),
		} {
			c, err := parseCredentials(in)
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Fatalf("the error shows the password: %v", err)
			}
			if err == nil && c.Password == secret && !strings.Contains(c.Username, secret) {
				var logs strings.Builder
				slog.New(slog.NewTextHandler(&logs, nil)).Info("login", "creds", c)
				if strings.Contains(c.String(), secret) || strings.Contains(logs.String(), secret) {
					t.Fatalf("the login shows its password: %s / %s", c, logs.String())
				}
			}
		}
	})
}
