package redfish

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/imaged/imaged/internal/power"
)

// Config is one BMC's connection. The zero value of every tuning field means its default.
type Config struct {
	// Name labels the BMC in logs and metrics (the bmc label); default Endpoint's host.
	Name string
	// Endpoint is the BMC's base URL, https://host[:port]. The Redfish root is always
	// /redfish/v1/ below it; a path other than that is refused. http is accepted for lab
	// emulators only, with a warning: the credentials then cross the wire in clear.
	Endpoint *url.URL
	// Username and Password log in. They are never logged and never put in an error.
	Username string
	Password string

	// TLS: by default the BMC's certificate chain is verified against the system roots, or
	// against CA / CAFile (PEM) when given. Fingerprint pins the SHA-256 of the leaf
	// certificate (hex, colons allowed) and replaces chain verification: the usual choice for
	// BMCs with self-signed certificates. Insecure skips all verification and is only honoured
	// when set explicitly. Fingerprint and Insecure exclude each other and the CA settings.
	CAFile      string
	CA          *x509.CertPool
	Fingerprint string
	Insecure    bool

	// Timeout bounds each HTTP request, from sending to the last byte of the answer
	// (default 10s).
	Timeout time.Duration
	// Retries is how many more times a failed request is tried (transport errors and 5xx,
	// never 4xx): default 4, negative for none.
	Retries int
	// BackoffBase and BackoffMax shape the wait before retry n: a uniformly random duration in
	// [0, min(BackoffMax, BackoffBase·2ⁿ)] ("full jitter"); defaults 500ms and 10s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// RetryAfterMax caps the wait a BMC may ask for with Retry-After (default 60s).
	RetryAfterMax time.Duration
	// MaxConcurrent bounds the requests in flight to this BMC (default 2): BMCs are small
	// computers and refuse or drop connections beyond a handful.
	MaxConcurrent int
	// BreakerThreshold consecutive failed operations mark the BMC degraded (default 5); it is
	// then left alone for BreakerCooldown (default 1m), after which one probe call is let through.
	BreakerThreshold int
	BreakerCooldown  time.Duration
	// OnHealthChange, if set, is called when the BMC becomes degraded or healthy again, on the
	// goroutine of the call that changed it; it must not block.
	OnHealthChange func(power.Health)

	// ReadbackTimeout bounds how long Power and SetBootOnce wait to read back the state they
	// asked for (default 2m: a graceful shutdown waits for the operating system).
	ReadbackTimeout time.Duration
	// PollInterval is the first wait between read-backs; it doubles up to 8×PollInterval
	// (default 1s).
	PollInterval time.Duration

	// Quirks, if set, replaces the quirks detected from the service root and the manager.
	Quirks *Quirks
}

// Defaults.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultRetries          = 4
	DefaultBackoffBase      = 500 * time.Millisecond
	DefaultBackoffMax       = 10 * time.Second
	DefaultRetryAfterMax    = time.Minute
	DefaultMaxConcurrent    = 2
	DefaultBreakerThreshold = 5
	DefaultBreakerCooldown  = time.Minute
	DefaultReadbackTimeout  = 2 * time.Minute
	DefaultPollInterval     = time.Second
)

// String shows the configuration without its password.
func (c Config) String() string {
	ep := ""
	if c.Endpoint != nil {
		ep = c.Endpoint.Redacted()
	}
	return fmt.Sprintf("redfish.Config{Name:%q Endpoint:%q Username:%q Password:%s}", c.Name, ep, c.Username, redacted(c.Password))
}

// LogValue keeps the password out of structured logs.
func (c Config) LogValue() slog.Value {
	ep := ""
	if c.Endpoint != nil {
		ep = c.Endpoint.Redacted()
	}
	return slog.GroupValue(slog.String("name", c.Name), slog.String("endpoint", ep),
		slog.String("username", c.Username), slog.String("password", redacted(c.Password)))
}

func redacted(s string) string {
	if s == "" {
		return "(empty)"
	}
	return "(redacted)"
}

// withDefaults validates c and fills in the defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Endpoint == nil {
		return c, errors.New("redfish: config: no endpoint")
	}
	ep := c.Endpoint
	switch {
	case ep.Scheme != "https" && ep.Scheme != "http":
		return c, fmt.Errorf("redfish: config: endpoint scheme %q: want https", ep.Scheme)
	case ep.User != nil:
		// Never echo the URL here: its user info may hold a password.
		return c, errors.New("redfish: config: endpoint must not carry user info; set Username and Password")
	case ep.Host == "":
		return c, errors.New("redfish: config: endpoint has no host")
	case ep.RawQuery != "" || ep.Fragment != "":
		return c, fmt.Errorf("redfish: config: endpoint %s: no query or fragment allowed", ep.Redacted())
	}
	switch ep.Path {
	case "", "/", "/redfish/v1", "/redfish/v1/":
	default:
		return c, fmt.Errorf("redfish: config: endpoint %s: path must be empty or /redfish/v1/", ep.Redacted())
	}
	if c.Username == "" || c.Password == "" {
		return c, errors.New("redfish: config: username and password are required")
	}
	if c.Insecure && (c.Fingerprint != "" || c.CAFile != "" || c.CA != nil) {
		return c, errors.New("redfish: config: insecure excludes fingerprint and CA")
	}
	if c.Fingerprint != "" && (c.CAFile != "" || c.CA != nil) {
		return c, errors.New("redfish: config: a pinned fingerprint replaces the CA; set one of them")
	}
	if c.CAFile != "" && c.CA != nil {
		return c, errors.New("redfish: config: set CAFile or CA, not both")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", c.Timeout}, {"backoff base", c.BackoffBase}, {"backoff max", c.BackoffMax},
		{"retry-after max", c.RetryAfterMax}, {"breaker cooldown", c.BreakerCooldown},
		{"read-back timeout", c.ReadbackTimeout}, {"poll interval", c.PollInterval}} {
		if d.v < 0 {
			return c, fmt.Errorf("redfish: config: negative %s %s", d.name, d.v)
		}
	}
	if c.MaxConcurrent < 0 || c.BreakerThreshold < 0 {
		return c, errors.New("redfish: config: negative concurrency or breaker threshold")
	}
	if c.Name == "" {
		c.Name = ep.Host
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Timeout, DefaultTimeout)
	def(&c.BackoffBase, DefaultBackoffBase)
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.RetryAfterMax, DefaultRetryAfterMax)
	def(&c.BreakerCooldown, DefaultBreakerCooldown)
	def(&c.ReadbackTimeout, DefaultReadbackTimeout)
	def(&c.PollInterval, DefaultPollInterval)
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.BreakerThreshold == 0 {
		c.BreakerThreshold = DefaultBreakerThreshold
	}
	if c.BackoffMax < c.BackoffBase {
		c.BackoffMax = c.BackoffBase
	}
	return c, nil
}
