// Package redfish is imaged's BMC client: it powers blades on and off and sets their one-time
// network boot through their BMC's Redfish service, and lists the systems behind a BMC (one for
// a blade's iLO, dozens behind a Moonshot chassis manager). Client implements power.Driver.
//
// BMCs are slow, flaky and idiosyncratic, so every call has a timeout, failed requests are
// retried with backoff (transport errors and 5xx, never 4xx; honouring Retry-After), requests
// to one BMC are bounded, a circuit breaker stops calling a BMC that keeps failing, every
// change is read back before it is reported done, and firmware quirks are handled from a
// table (quirks.go). It speaks HTTP itself and takes its schema vocabulary from gofish.
//
// It is a leaf that knows nothing of jobs or storage. internal/power/fleet builds the Clients (the
// daemon's and the `imaged bmc` CLI's) and uses them as power.Driver; the lab reads its credentials
// file with LoadCredentials. The agent must never import it (it pulls in gofish).
package redfish

import (
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/imaged/imaged/internal/power"
)

var (
	_ power.Driver         = (*Client)(nil)
	_ power.HealthReporter = (*Client)(nil)
)

// Client talks to one BMC. It is safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	base   *url.URL // scheme://host of the BMC
	hc     *http.Client
	sem    chan struct{} // Config.MaxConcurrent requests in flight
	br     *breaker
	m      *bmcMetrics
	jitter func(max time.Duration) time.Duration // uniform in [0, max]; tests pin it

	// login serialises connect, re-login and logout. It is a channel, not a mutex, because
	// it is held across network I/O: a caller waiting for another's slow login can give up.
	loginLock chan struct{}
	mu        sync.Mutex // guards the fields below
	ready     bool       // root read and logged in
	quirks    Quirks
	root      serviceRoot
	auth      auth
	ids       map[string]string // system ID → path, learnt by Systems and System
}

// auth is how requests authenticate: a session token, or basic auth when the BMC has no
// session service.
type auth struct {
	token   string // X-Auth-Token
	session string // path of the session resource, DELETEd on Close
	basic   bool
}

// New validates cfg and builds a Client. It does no I/O: the first call reads the service root,
// detects the quirks and logs in. m may be nil.
func New(cfg Config, log *slog.Logger, m *Metrics) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               nil, // BMCs sit on a management network; never through a proxy
		DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: cfg.Timeout,
		MaxConnsPerHost:     cfg.MaxConcurrent,
		MaxIdleConnsPerHost: cfg.MaxConcurrent,
		// BMCs drop idle connections after a few seconds and answer a reused dead one with
		// a reset; keeping them briefly saves TLS handshakes without courting that.
		IdleConnTimeout: 5 * time.Second,
	}
	c := newClient(cfg, log, m, tr)
	if cfg.Endpoint.Scheme == "http" {
		c.log.Warn("BMC endpoint is plain http: credentials cross the network in clear")
	}
	if cfg.Insecure {
		c.log.Warn("BMC certificate is not verified (insecure)")
	}
	return c, nil
}

// newClient builds a Client on rt; tests pass an in-memory transport.
func newClient(cfg Config, log *slog.Logger, m *Metrics, rt http.RoundTripper) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg:  cfg,
		log:  log.With("bmc", cfg.Name),
		base: &url.URL{Scheme: cfg.Endpoint.Scheme, Host: cfg.Endpoint.Host},
		hc: &http.Client{
			Transport: rt,
			// Redirects are followed by attempt, which keeps method, body and credentials
			// and stays on this BMC.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		sem:       make(chan struct{}, cfg.MaxConcurrent),
		br:        &breaker{threshold: cfg.BreakerThreshold, cooldown: cfg.BreakerCooldown},
		m:         m.forBMC(cfg.Name),
		jitter:    func(max time.Duration) time.Duration { return rand.N(max + 1) },
		ids:       make(map[string]string),
		loginLock: make(chan struct{}, 1),
	}
	if cfg.Quirks != nil {
		c.quirks = *cfg.Quirks
	}
	return c
}

// Health reports the BMC's circuit breaker.
func (c *Client) Health() power.Health { return c.br.health() }
