package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/imaged/imaged/internal/agentapi"
)

// HelloPath is the agent API endpoint, relative to Config.Server.
const HelloPath = agentapi.HelloPath

// HelloRequest is the JSON body of POST /agent/v1/hello.
type HelloRequest = agentapi.HelloRequest

// helloResult is a 2xx answer to hello.
type helloResult = Answer

// sendHello POSTs the body that mkBody returns (made anew for each attempt, so the uptime is
// fresh) until a 2xx answer, with Retry's rules (cfg.HelloAttempt per attempt, backoff from
// cfg.HelloBackoff to cfg.HelloBackoffMax), for at most cfg.HelloTimeout; a final 4xx is
// ErrRefused.
func sendHello(ctx context.Context, c Doer, url string, mkBody func() HelloRequest, cfg *Config, log *slog.Logger) (helloResult, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.HelloTimeout, fmt.Errorf("no success within %v", cfg.HelloTimeout))
	defer cancel()
	r := Retry{HTTP: c, Attempt: cfg.HelloAttempt, Backoff: cfg.HelloBackoff, MaxBackoff: cfg.HelloBackoffMax, Log: log}
	return r.Do(ctx, "agent: hello to "+url, func(ctx context.Context) (*http.Request, error) {
		body := mkBody()
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "imaged-agent/"+body.AgentVersion)
		return req, nil
	})
}
