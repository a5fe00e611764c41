package api

import (
	"errors"
	"net"
	"net/http"
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

// The agent's work loop: GET /agent/v1/plan says what to write, POST /agent/v1/progress reports
// every second while it writes, POST /agent/v1/result reports the outcome. Each request carries
// the per-boot token (Authorization: Bearer) and the MAC it was issued for (X-Imaged-MAC).

// agentAuth checks the token and MAC of an agent request and returns its machine id.
func (s *Server) agentAuth(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="imaged agent"`)
		fail(w, http.StatusUnauthorized, "Authorization", "the boot token is required: Authorization: Bearer <imaged.token>")
		return "", false
	}
	mac, err := net.ParseMAC(r.Header.Get(agentapi.HeaderMAC))
	if err != nil || len(mac) != 6 {
		fail(w, http.StatusBadRequest, agentapi.HeaderMAC, "header "+agentapi.HeaderMAC+" must be the netbooted NIC's MAC address")
		return "", false
	}
	rec, err := s.inv.Authorize(mac, tok)
	if err != nil || rec.MachineID == "" {
		fail(w, http.StatusForbidden, "Authorization", "boot token not valid for this MAC")
		return "", false
	}
	return rec.MachineID, true
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
	hexd := strings.TrimPrefix(p.Image.Digest, "sha256:")
	writeJSON(w, http.StatusOK, agentapi.Plan{Action: agentapi.ActionWrite, Target: agentapi.PlanTarget{Serial: p.Machine.DiskSerial, ByPath: p.Machine.DiskByPath}, Image: &agentapi.PlanImage{
		Ref: p.Image.Ref(), Digest: p.Image.Digest, Size: p.Image.Size, ManifestHash: p.Image.ManifestHash,
		ManifestURL: s.publicURL.JoinPath("images", hexd, "manifest").String(),
		BlobURL:     s.publicURL.JoinPath("images", hexd, "blob").String(),
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

func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentAuth(w, r)
	if !ok {
		return
	}
	var res agentapi.Result
	if !decode(w, r, &res) {
		return
	}
	m, err := s.inv.RecordResult(id, res)
	if errors.Is(err, inventory.ErrResultMismatch) {
		s.log.Warn("agent result refused", "machine", id, "err", err)
		s.signal(id, jobs.Signal{Kind: jobs.SignalResult, Reason: "the server refused the agent's result: " + err.Error()})
		fail(w, http.StatusConflict, "digest", "%v", err)
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, "", "%v", err)
		return
	}
	accepted := res.Error == "" && m.CurrentImage == res.Digest
	if accepted {
		s.signal(id, jobs.Signal{Kind: jobs.SignalResult, Verified: true})
	} else {
		s.signal(id, jobs.Signal{Kind: jobs.SignalResult, Reason: "the agent failed to write: " + res.Error})
	}
	s.log.Info("agent result", "machine", id, "accepted", accepted, "digest", res.Digest, "error", res.Error)
	writeJSON(w, http.StatusOK, agentapi.ResultReply{Accepted: accepted, Action: agentapi.ActionWait})
}
