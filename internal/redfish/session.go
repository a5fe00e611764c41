package redfish

import (
	"context"
	"fmt"
	"net/http"

	"github.com/imaged/imaged/internal/power"
)

// Close logs out: the session is DELETEd so that it does not hold one of the BMC's few session
// slots until it times out. The Client can still be used; it logs in again.
func (c *Client) Close(ctx context.Context) error {
	if err := c.lockLogin(ctx); err != nil {
		return fmt.Errorf("redfish: log out: %w", err)
	}
	defer c.unlockLogin()
	c.mu.Lock()
	a := c.auth
	c.ready, c.auth = false, auth{}
	c.mu.Unlock()
	defer c.hc.CloseIdleConnections()
	if a.session == "" || a.token == "" {
		return nil
	}
	resp, err := c.exchange(ctx, request{method: http.MethodDelete, path: a.session}, a)
	switch {
	case err != nil:
		return fmt.Errorf("redfish: log out: %w", err)
	case resp.status == http.StatusNotFound || resp.status == http.StatusUnauthorized:
		return nil // the session had already expired
	case resp.status >= 300:
		return fmt.Errorf("redfish: log out: %w", resp.httpError(http.MethodDelete))
	}
	return nil
}

// session returns the current authentication, connecting first if needed.
func (c *Client) session(ctx context.Context) (auth, Quirks, error) {
	c.mu.Lock()
	if c.ready {
		defer c.mu.Unlock()
		return c.auth, c.quirks, nil
	}
	c.mu.Unlock()

	if err := c.lockLogin(ctx); err != nil {
		return auth{}, Quirks{}, err
	}
	defer c.unlockLogin()
	c.mu.Lock()
	if c.ready { // someone else connected meanwhile
		defer c.mu.Unlock()
		return c.auth, c.quirks, nil
	}
	c.mu.Unlock()
	if err := c.connect(ctx); err != nil {
		return auth{}, Quirks{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.auth, c.quirks, nil
}

// connect reads the service root, detects the quirks and logs in. The login lock is held.
func (c *Client) connect(ctx context.Context) error {
	var root serviceRoot
	resp, err := c.exchange(ctx, request{method: http.MethodGet, path: "/redfish/v1/"}, auth{})
	switch {
	case err != nil:
		return fmt.Errorf("read service root: %w", err)
	case resp.status == http.StatusUnauthorized:
		// The standard makes the root readable without credentials; a BMC that disagrees
		// gets the standard paths and a session login.
		root.Systems, root.Managers = "/redfish/v1/Systems", "/redfish/v1/Managers"
		root.SessionService = "/redfish/v1/SessionService"
	case resp.status >= 300:
		return fmt.Errorf("read service root: %w", resp.httpError(http.MethodGet))
	default:
		if err := decode(resp.body, &root); err != nil {
			return fmt.Errorf("read service root: %w", err)
		}
	}
	if root.Systems == "" {
		root.Systems = "/redfish/v1/Systems"
	}
	id := root.identity()
	c.mu.Lock()
	c.root = root
	if c.cfg.Quirks == nil {
		c.quirks = quirksFor(id)
	}
	c.mu.Unlock()

	a, err := c.login(ctx, root.sessionsPath())
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.auth = a
	c.mu.Unlock()

	if c.cfg.Quirks == nil && (id.Model == "" || id.Firmware == "") && root.Managers != "" {
		// The root did not name the manager: its Model and FirmwareVersion key the quirks.
		if mg, ok := c.firstManager(ctx, a, string(root.Managers)); ok {
			id.Model, id.Firmware = mg.Model, mg.FirmwareVersion
			c.mu.Lock()
			c.quirks = quirksFor(id)
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	c.ready = true
	q := c.quirks
	c.mu.Unlock()
	c.log.Info("connected to BMC", "vendor", id.Vendor, "model", id.Model, "firmware", id.Firmware,
		"redfish", root.RedfishVersion, "quirks", q.Name, "auth", a.kind())
	return nil
}

// firstManager reads the first member of the Managers collection, for the quirk table only:
// failing to read it leaves the quirks as the root gave them.
func (c *Client) firstManager(ctx context.Context, a auth, path string) (manager, bool) {
	var col collection
	if err := c.getWith(ctx, a, path, &col); err != nil || len(col.Members) == 0 {
		c.log.Debug("manager not read; quirks from the service root only", "err", err)
		return manager{}, false
	}
	var mg manager
	if err := c.getWith(ctx, a, string(col.Members[0]), &mg); err != nil {
		c.log.Debug("manager not read; quirks from the service root only", "err", err)
		return manager{}, false
	}
	return mg, true
}

// getWith is a GET during connect (no breaker, no re-login: connect is inside one call).
func (c *Client) getWith(ctx context.Context, a auth, path string, v any) error {
	resp, err := c.exchange(ctx, request{method: http.MethodGet, path: path}, a)
	if err != nil {
		return err
	}
	if resp.status >= 300 {
		return resp.httpError(http.MethodGet)
	}
	return decode(resp.body, v)
}

// login creates a session at path, or settles for basic auth when the service has no session
// service (path "") or refuses to create sessions with 404/405.
func (c *Client) login(ctx context.Context, path string) (auth, error) {
	if path == "" {
		c.log.Info("BMC has no session service; using basic auth")
		return auth{basic: true}, nil
	}
	body, err := jsonBody(map[string]string{"UserName": c.cfg.Username, "Password": c.cfg.Password})
	if err != nil {
		return auth{}, err
	}
	resp, err := c.exchange(ctx, request{method: http.MethodPost, path: path, body: body}, auth{})
	if err != nil {
		return auth{}, fmt.Errorf("log in: %w", err)
	}
	switch {
	case resp.status == http.StatusNotFound || resp.status == http.StatusMethodNotAllowed:
		c.log.Info("BMC refuses session login; using basic auth", "status", resp.status)
		return auth{basic: true}, nil
	case resp.status >= 300:
		return auth{}, fmt.Errorf("log in as %q: %w", c.cfg.Username, resp.httpError(http.MethodPost))
	}
	a := auth{token: resp.header.Get("X-Auth-Token"), session: resp.header.Get("Location")}
	if a.token == "" {
		return auth{}, fmt.Errorf("log in: %w: session created without X-Auth-Token", power.ErrMalformed)
	}
	if a.session == "" { // the Location header is required, but the body names it too
		var s struct {
			ODataID string `json:"@odata.id"`
		}
		if decode(resp.body, &s) == nil {
			a.session = s.ODataID
		}
	}
	return a, nil
}

// relogin replaces the session that old used, once: concurrent callers that saw the same
// 401 share one new login.
func (c *Client) relogin(ctx context.Context, old auth) (auth, error) {
	if err := c.lockLogin(ctx); err != nil {
		return auth{}, err
	}
	defer c.unlockLogin()
	c.mu.Lock()
	cur, path := c.auth, c.root.sessionsPath()
	c.mu.Unlock()
	if cur.token != old.token { // another caller already logged in again
		return cur, nil
	}
	c.log.Info("session expired or revoked; logging in again")
	a, err := c.login(ctx, path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.ready, c.auth = false, auth{} // the next call starts over from the root
		return auth{}, err
	}
	c.auth = a
	return a, nil
}

func (a auth) kind() string {
	if a.basic {
		return "basic"
	}
	return "session"
}

func (c *Client) lockLogin(ctx context.Context) error {
	select {
	case c.loginLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) unlockLogin() { <-c.loginLock }

// ensure connects if that has not been done, as one operation under the circuit breaker.
func (c *Client) ensure(ctx context.Context) error {
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	if ready {
		return nil
	}
	_, err := c.op(func() (*response, error) {
		_, _, err := c.session(ctx)
		return nil, err
	})
	return err
}
