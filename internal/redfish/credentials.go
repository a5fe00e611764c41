package redfish

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Environment variables LoadCredentials reads when given no file.
const (
	EnvUsername = "IMAGED_BMC_USERNAME"
	EnvPassword = "IMAGED_BMC_PASSWORD"
)

// Credentials are a BMC login. Printing or logging them shows the username only.
type Credentials struct {
	Username string
	Password string
}

func (c Credentials) String() string {
	return fmt.Sprintf("%s:%s", c.Username, redacted(c.Password))
}

// LogValue keeps the password out of structured logs.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", c.Username), slog.String("password", redacted(c.Password)))
}

// LoadCredentials reads a BMC login from file, or from $IMAGED_BMC_USERNAME and
// $IMAGED_BMC_PASSWORD when file is "".
//
// The file holds two "key: value" lines, in any order:
//
//	# blank lines and lines starting with # are ignored
//	username: Administrator
//	password: the password, taken to the end of the line with surrounding blanks trimmed
//
// A file that others may read (mode o+r) is refused, as ssh refuses such keys. Errors name the
// file and line, never a value.
func LoadCredentials(file string) (Credentials, error) {
	if file == "" {
		c := Credentials{Username: os.Getenv(EnvUsername), Password: os.Getenv(EnvPassword)}
		if c.Username == "" || c.Password == "" {
			return Credentials{}, fmt.Errorf("redfish: credentials: no file given and %s or %s is unset", EnvUsername, EnvPassword)
		}
		return c, nil
	}
	fi, err := os.Stat(file)
	if err != nil {
		return Credentials{}, fmt.Errorf("redfish: credentials: %w", err)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return Credentials{}, fmt.Errorf("redfish: credentials: %s is readable by everyone (mode %v); chmod o-r it", file, fi.Mode().Perm())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return Credentials{}, fmt.Errorf("redfish: credentials: %w", err)
	}
	c, err := parseCredentials(b)
	if err != nil {
		return Credentials{}, fmt.Errorf("redfish: credentials: %s: %w", file, err)
	}
	return c, nil
}

func parseCredentials(b []byte) (Credentials, error) {
	var c Credentials
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 1
	for ; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return c, fmt.Errorf("line %d: want \"username: …\" or \"password: …\"", n)
		}
		value = strings.TrimSpace(value)
		var dst *string
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "username":
			dst = &c.Username
		case "password":
			dst = &c.Password
		default:
			return c, fmt.Errorf("line %d: unknown key (want username or password)", n)
		}
		if *dst != "" {
			return c, fmt.Errorf("line %d: %s given twice", n, strings.ToLower(strings.TrimSpace(key)))
		}
		if value == "" {
			return c, fmt.Errorf("line %d: empty value", n)
		}
		*dst = value
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return c, fmt.Errorf("line %d: longer than %d KiB: not a credentials file", n, bufio.MaxScanTokenSize>>10)
		}
		return c, fmt.Errorf("line %d: %w", n, err)
	}
	if c.Username == "" || c.Password == "" {
		return c, errors.New("want both a username: and a password: line")
	}
	return c, nil
}
