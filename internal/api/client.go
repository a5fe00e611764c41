package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
)

// Client speaks the operator API with a method per operation: how the CLI and the lab read and
// change imaged's state. It reaches a daemon's control socket (NewControlClient: root and imaged's
// user get the admin scope), a daemon over HTTP(S) with a bearer token (NewClient), or an API
// served in this very process (NewHandlerClient).
type Client struct {
	http  *http.Client
	base  *url.URL
	token string // sent as a bearer token
	by    string // the operator, sent as OperatorHeader
	where string // what did not answer, for errors
}

// requestTimeout bounds a call: changes are small; a prune of many blobs is the slowest thing
// asked of the API.
const requestTimeout = 5 * time.Minute

// NewControlClient returns a client of the control socket at path; by names the operator.
func NewControlClient(path, by string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{http: &http.Client{Transport: tr, Timeout: requestTimeout}, base: &url.URL{Scheme: "http", Host: "imaged"}, by: by,
		where: fmt.Sprintf("imaged's control socket %s did not answer (is imaged running?)", path)}
}

// NewClient returns a client of the daemon at base (https://host:port) with an API token; its
// scope decides what the calls may do. A self-signed certificate is trusted through
// SSL_CERT_FILE.
func NewClient(base *url.URL, token, by string) *Client {
	return &Client{http: &http.Client{Timeout: requestTimeout}, base: base, token: token, by: by,
		where: fmt.Sprintf("imaged at %s did not answer", base.Redacted())}
}

// Do sends body (if not nil) as JSON and decodes a 2xx reply into out (if not nil); another
// status is a *ResponseError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	// path goes after the base's own (a daemon behind a proxy may have one), as it is: escaped.
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.base.String(), "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.by != "" {
		req.Header.Set(OperatorHeader, c.by)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", c.where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e := &ResponseError{Status: resp.StatusCode}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e.Body); err != nil || e.Body.Error == "" {
			e.Body.Error = resp.Status
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("imaged %s %s: reply: %w", method, path, err)
	}
	return nil
}

// ResponseError is an error the API answered with.
type ResponseError struct {
	Status int
	Body   Error
}

func (e *ResponseError) Error() string {
	if e.Body.Field != "" {
		return fmt.Sprintf("%s (field %s; HTTP %d)", e.Body.Error, e.Body.Field, e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Body.Error, e.Status)
}

// reply is Do with the type of its reply.
func reply[T any](ctx context.Context, c *Client, method, path string, body any) (T, error) {
	var out T
	return out, c.Do(ctx, method, path, body, &out)
}

func imagePath(ref images.Ref) string    { return "/api/v1/images/" + url.PathEscape(ref.String()) }
func machinePath(id, more string) string { return "/api/v1/machines/" + url.PathEscape(id) + more }

// Images is the catalog: every image and every channel.
func (c *Client) Images(ctx context.Context) (Catalog, error) {
	return reply[Catalog](ctx, c, "GET", "/api/v1/images", nil)
}

// Image is the image ref names (NAME@VERSION, NAME@CHANNEL or a digest) and its name's channels.
func (c *Client) Image(ctx context.Context, ref images.Ref) (ImageInfo, error) {
	return reply[ImageInfo](ctx, c, "GET", imagePath(ref), nil)
}

// Register records a blob already in the daemon's blob store; the reply is what the catalog keeps.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (images.Image, error) {
	return reply[images.Image](ctx, c, "POST", "/api/v1/images", req)
}

// Promote points channel of ref's name at ref (NAME@VERSION).
func (c *Client) Promote(ctx context.Context, ref images.Ref, channel string) (images.Channel, error) {
	return reply[images.Channel](ctx, c, "POST", imagePath(ref)+"/promote", PromoteRequest{Channel: channel})
}

// Rollback moves the channel ref names (NAME@CHANNEL) back one version.
func (c *Client) Rollback(ctx context.Context, ref images.Ref) (images.Channel, error) {
	return reply[images.Channel](ctx, c, "POST", imagePath(ref)+"/rollback", nil)
}

// DeleteImage removes ref (NAME@VERSION), and its blob when no other version has its bytes.
func (c *Client) DeleteImage(ctx context.Context, ref images.Ref) (DeleteReply, error) {
	return reply[DeleteReply](ctx, c, "DELETE", imagePath(ref), nil)
}

// Prune keeps the newest keep versions of every name, and whatever is in use.
func (c *Client) Prune(ctx context.Context, keep int) (PruneReply, error) {
	return reply[PruneReply](ctx, c, "POST", "/api/v1/images/prune", PruneRequest{Keep: keep})
}

// Assign sets the image machine id is to run.
func (c *Client) Assign(ctx context.Context, id string, ref images.Ref) (AssignReply, error) {
	return reply[AssignReply](ctx, c, "POST", machinePath(id, "/assign"), AssignRequest{Image: ref.String()})
}

// Machines is the inventory, with what the daemon knows of each machine.
func (c *Client) Machines(ctx context.Context) ([]MachineView, error) {
	return reply[[]MachineView](ctx, c, "GET", "/api/v1/machines", nil)
}

// Machine is one machine, with its power and health as its BMC reads them.
func (c *Client) Machine(ctx context.Context, id string) (MachineView, error) {
	return reply[MachineView](ctx, c, "GET", machinePath(id, ""), nil)
}

// MachineEvents is machine id's timeline.
func (c *Client) MachineEvents(ctx context.Context, id string) ([]machines.Event, error) {
	return reply[[]machines.Event](ctx, c, "GET", machinePath(id, "/events"), nil)
}

// UnknownClients are the clients seen on the blade network that are not in the inventory.
func (c *Client) UnknownClients(ctx context.Context) ([]machines.Unknown, error) {
	return reply[[]machines.Unknown](ctx, c, "GET", "/api/v1/unknown-clients", nil)
}

// Reimage submits a reimage job for machine id.
func (c *Client) Reimage(ctx context.Context, id string, req ReimageRequest) (jobs.Job, error) {
	return reply[jobs.Job](ctx, c, "POST", machinePath(id, "/reimage"), req)
}

// Reboot submits a reboot job for machine id.
func (c *Client) Reboot(ctx context.Context, id string, req RebootRequest) (jobs.Job, error) {
	return reply[jobs.Job](ctx, c, "POST", machinePath(id, "/reboot"), req)
}

// Jobs lists the jobs f selects (its Machine, Active and Limit), newest first.
func (c *Client) Jobs(ctx context.Context, f jobs.Filter) ([]jobs.Job, error) {
	q := url.Values{}
	if f.Machine != "" {
		q.Set("machine", f.Machine)
	}
	if f.Active {
		q.Set("active", "true")
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return reply[[]jobs.Job](ctx, c, "GET", "/api/v1/jobs?"+q.Encode(), nil)
}

// Job is one job, with its phases and timeline.
func (c *Client) Job(ctx context.Context, id string) (jobs.Job, error) {
	return reply[jobs.Job](ctx, c, "GET", "/api/v1/jobs/"+url.PathEscape(id), nil)
}

// CancelJob cancels job id.
func (c *Client) CancelJob(ctx context.Context, id string) (jobs.Job, error) {
	return reply[jobs.Job](ctx, c, "POST", "/api/v1/jobs/"+url.PathEscape(id)+"/cancel", nil)
}

// MachineBMC is machine id's system as its BMC reports it.
func (c *Client) MachineBMC(ctx context.Context, id string) (MachinePower, error) {
	return reply[MachinePower](ctx, c, "GET", machinePath(id, "/bmc"), nil)
}

// Power performs a on machine id through its BMC; the reply is read back once it took effect.
func (c *Client) Power(ctx context.Context, id string, a power.Action) (MachinePower, error) {
	return reply[MachinePower](ctx, c, "POST", machinePath(id, "/power"), PowerRequest{Action: string(a)})
}

// BootOnce sets machine id's next boot through its BMC (uri for power.UefiHttp only), read back.
func (c *Client) BootOnce(ctx context.Context, id string, t power.BootTarget, uri string) (MachinePower, error) {
	return reply[MachinePower](ctx, c, "POST", machinePath(id, "/boot"), BootRequest{Target: string(t), URI: uri})
}

// BMC is BMC name and every system behind it.
func (c *Client) BMC(ctx context.Context, name string) (BMCInfo, error) {
	return reply[BMCInfo](ctx, c, "GET", "/api/v1/bmcs/"+url.PathEscape(name), nil)
}
