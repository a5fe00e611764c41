package api

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
)

// signal passes an observation to the machine's job, if jobs run here.
func (s *Server) signal(machine string, sig jobs.Signal) {
	if s.jobs != nil {
		s.jobs.Observe(machine, sig)
	}
}

// The agent's work loop: POST /agent/v1/hello trades the boot token for a session, GET
// /agent/v1/plan says what to write, POST /agent/v1/progress reports every second while it
// writes, GET /agent/v1/challenge and POST /agent/v1/result end it with the outcome and its
// proof. Each request after the hello carries the session token (Authorization: Bearer) and the
// MAC (X-Imaged-MAC), from the address of the hello.

// remoteAddr is the address a request came from: the connection's, never a header's or a body's.
func remoteAddr(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

func (s *Server) hello(w http.ResponseWriter, r *http.Request) {
	var req agentapi.HelloRequest
	if !decode(w, r, &req) {
		return
	}
	mac, err := net.ParseMAC(req.MAC)
	if err != nil || len(mac) != 6 {
		fail(w, http.StatusBadRequest, "mac", "%q is not an Ethernet MAC address", req.MAC)
		return
	}
	if req.Token == "" {
		fail(w, http.StatusBadRequest, "token", "the boot token from the kernel command line (imaged.token=) is required")
		return
	}
	remote, ok := remoteAddr(r)
	if !ok {
		fail(w, http.StatusForbidden, "", "an agent hello must come over TCP from the blade's address")
		return
	}
	m, session, err := s.inv.Hello(inventory.HelloRequest{MAC: mac, Token: req.Token, Remote: remote, AgentVersion: req.AgentVersion, Uptime: req.UptimeSeconds})
	switch {
	case errors.Is(err, inventory.ErrBadToken), errors.Is(err, inventory.ErrTokenUsed), errors.Is(err, inventory.ErrWrongAddress):
		s.log.Warn("agent hello refused", "mac", mac.String(), "remote", remote, "err", err)
		fail(w, http.StatusForbidden, "token", "%v", err)
		return
	case errors.Is(err, inventory.ErrUnknownMachine):
		fail(w, http.StatusNotFound, "mac", "%v", err)
		return
	case err != nil:
		s.log.Error("agent hello", "mac", mac.String(), "err", err)
		fail(w, http.StatusInternalServerError, "", "cannot record the hello: %v", err)
		return
	}
	s.log.Info("agent hello", "machine", m.ID, "mac", mac.String(), "remote", remote, "agent_version", req.AgentVersion)
	if m.ID != "" {
		s.signal(m.ID, jobs.Signal{Kind: jobs.SignalHello})
	}
	writeJSON(w, http.StatusOK, agentapi.HelloReply{MachineID: m.ID, Action: agentapi.ActionWait, Session: session})
}

// agentAuth checks the session token, MAC and address of an agent request and returns its
// machine id.
func (s *Server) agentAuth(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="imaged agent"`)
		fail(w, http.StatusUnauthorized, "Authorization", "the session token from the hello's reply is required: Authorization: Bearer <session>")
		return "", false
	}
	mac, err := net.ParseMAC(r.Header.Get(agentapi.HeaderMAC))
	if err != nil || len(mac) != 6 {
		fail(w, http.StatusBadRequest, agentapi.HeaderMAC, "header "+agentapi.HeaderMAC+" must be the netbooted NIC's MAC address")
		return "", false
	}
	remote, _ := remoteAddr(r)
	sess, err := s.inv.Authorize(mac, tok, remote)
	if err != nil {
		s.log.Warn("agent request refused", "path", r.URL.Path, "mac", mac.String(), "remote", r.RemoteAddr, "err", err)
		fail(w, http.StatusForbidden, "Authorization", "session not valid for this MAC from this address")
		return "", false
	}
	return sess.MachineID, true
}

func (s *Server) plan(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentAuth(w, r)
	if !ok {
		return
	}
	// An agent asking for work is alive on the machine: after a daemon restart this is how a
	// job that was waiting for the hello learns of it.
	s.signal(id, jobs.Signal{Kind: jobs.SignalHello})
	p, err := s.inv.Plan(id)
	switch {
	case errors.Is(err, inventory.ErrNoPlan):
		writeJSON(w, http.StatusOK, agentapi.Plan{Action: agentapi.ActionWait})
		return
	case err != nil:
		s.log.Error("agent plan", "machine", id, "err", err)
		fail(w, http.StatusConflict, "", "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, agentapi.Plan{Action: agentapi.ActionWrite, Target: agentapi.PlanTarget{Serial: p.Machine.DiskSerial, ByPath: p.Machine.DiskByPath}, Image: &agentapi.PlanImage{
		Ref: p.Image.Ref().String(), Digest: p.Image.Digest.String(), Size: p.Image.Size, ManifestHash: p.Image.ManifestHash.String(),
		ManifestURL: s.publicURL.JoinPath("images", p.Image.Digest.Hex(), "manifest").String(),
		BlobURL:     s.publicURL.JoinPath("images", p.Image.Digest.Hex(), "blob").String(),
	}})
}

func (s *Server) progress(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentAuth(w, r)
	if !ok {
		return
	}
	var p agentapi.Progress
	if !decode(w, r, &p) {
		return
	}
	if p.BytesDone < 0 || p.BytesTotal < 0 || p.BytesDone > p.BytesTotal {
		fail(w, http.StatusBadRequest, "bytes_done", "bytes_done must be between 0 and bytes_total")
		return
	}
	s.inv.ReportProgress(id, p)
	s.signal(id, jobs.Signal{Kind: jobs.SignalProgress, Progress: &p})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) challenge(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentAuth(w, r)
	if !ok {
		return
	}
	p, err := s.inv.Plan(id)
	switch {
	case errors.Is(err, inventory.ErrNoPlan):
		fail(w, http.StatusConflict, "", "no image is assigned to %s that a proof could be for", id)
		return
	case err != nil:
		fail(w, http.StatusConflict, "", "%v", err)
		return
	}
	c, err := s.proofs.issue(id, p.Image)
	if err != nil {
		s.log.Error("agent challenge", "machine", id, "err", err)
		fail(w, http.StatusServiceUnavailable, "", "cannot make a challenge: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentAuth(w, r)
	if !ok {
		return
	}
	var res agentapi.Result
	if !decode(w, r, &res) {
		return
	}
	// The same result again (the agent did not get the reply to the first): the same answer. The
	// agent names the digest as its plan wrote it; only that text is the machine's image.
	if res.Error == "" && res.Proof != nil && s.proofs.acceptedBefore(id, res.Digest, res.Proof.Nonce) {
		if m, ok := s.inv.Machine(id); ok && m.CurrentImage.String() == res.Digest {
			writeJSON(w, http.StatusOK, agentapi.ResultReply{Accepted: true, Action: agentapi.ActionWait})
			return
		}
	}
	if res.Error == "" && res.Proof != nil && !s.proofs.outstanding(id) {
		// No evidence against the write: the challenge is gone (a restart of the daemon, or
		// too late). The agent asks for a new one.
		fail(w, http.StatusConflict, "challenge", "no challenge is outstanding for %s (it expired, or imaged restarted): GET /%s and answer it", id, agentapi.ChallengePath)
		return
	}
	m, err := s.inv.RecordResult(id, res, func(p inventory.Plan, proof *agentapi.Proof) error { return s.proofs.check(id, p.Image, proof) })
	if errors.Is(err, inventory.ErrResultMismatch) || errors.Is(err, inventory.ErrProof) {
		s.log.Warn("agent result refused", "machine", id, "remote", r.RemoteAddr, "err", err)
		s.metrics.results.WithLabelValues("refused").Inc()
		s.signal(id, jobs.Signal{Kind: jobs.SignalResult, Reason: "the server refused the agent's result: " + err.Error()})
		field := "digest"
		if errors.Is(err, inventory.ErrProof) {
			field = "proof"
		}
		fail(w, http.StatusConflict, field, "%v", err)
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, "", "%v", err)
		return
	}
	accepted := res.Error == "" && m.CurrentImage.String() == res.Digest
	if accepted {
		s.proofs.accept(id, res.Digest, res.Proof.Nonce)
		s.metrics.results.WithLabelValues("accepted").Inc()
		s.signal(id, jobs.Signal{Kind: jobs.SignalResult, Verified: true})
	} else {
		s.metrics.results.WithLabelValues("failed").Inc()
		s.signal(id, jobs.Signal{Kind: jobs.SignalResult, Reason: "the agent failed to write: " + res.Error})
	}
	s.log.Info("agent result", "machine", id, "accepted", accepted, "digest", res.Digest, "error", res.Error)
	writeJSON(w, http.StatusOK, agentapi.ResultReply{Accepted: accepted, Action: agentapi.ActionWait})
}
