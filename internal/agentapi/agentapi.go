// Package agentapi is the wire format of imaged's agent API, /agent/v1: the JSON bodies that the
// agent (on the blade) and the server exchange. Both sides import these types, so that they
// cannot drift apart. It is a leaf with no dependencies beyond the standard library, safe to
// ship in the agent's initramfs.
//
//	POST /agent/v1/hello     HelloRequest → HelloReply
//	GET  /agent/v1/plan      → Plan
//	POST /agent/v1/progress  Progress → 204
//	POST /agent/v1/result    Result → ResultReply
//
// Every request after the hello carries the per-boot token (Authorization: Bearer) and the MAC
// it was issued for (HeaderMAC); the hello carries them in its body.
package agentapi

// Paths, relative to the server's URL (the kernel command line's imaged.server).
const (
	HelloPath    = "agent/v1/hello"
	PlanPath     = "agent/v1/plan"
	ProgressPath = "agent/v1/progress"
	ResultPath   = "agent/v1/result"
)

// HeaderMAC names the netbooted NIC's MAC in every request after the hello.
const HeaderMAC = "X-Imaged-MAC"

// HelloRequest is the body of POST /agent/v1/hello.
type HelloRequest struct {
	MAC           string  `json:"mac"`
	Token         string  `json:"token"`
	IP            string  `json:"ip,omitempty"`
	AgentVersion  string  `json:"agent_version,omitempty"`
	UptimeSeconds float64 `json:"uptime_seconds,omitempty"` // since the kernel booted
}

// HelloReply tells the agent who it is.
type HelloReply struct {
	MachineID string `json:"machine_id,omitempty"`
	Action    string `json:"action"` // "wait": stay up and ask for a plan
}

// Plan actions.
const (
	ActionWrite = "write"
	ActionWait  = "wait"
)

// Plan is the body of GET /agent/v1/plan.
type Plan struct {
	Action string     `json:"action"`
	Image  *PlanImage `json:"image,omitempty"`
	Target PlanTarget `json:"target"`
}

// PlanImage names the image to write and where to fetch it.
type PlanImage struct {
	Ref          string `json:"ref"`
	Digest       string `json:"digest"` // sha256:<hex>
	Size         int64  `json:"size"`
	ManifestHash string `json:"manifest_hash"` // hex SHA-256 of the manifest's canonical encoding
	ManifestURL  string `json:"manifest_url"`
	BlobURL      string `json:"blob_url"`
}

// PlanTarget says which disk to write; empty fields mean "the only non-removable disk at least
// as large as the image".
type PlanTarget struct {
	Serial string `json:"serial,omitempty"`
	ByPath string `json:"by_path,omitempty"`
}

// Progress is the body of POST /agent/v1/progress, sent every second while writing.
type Progress struct {
	Digest       string  `json:"digest"`
	BytesDone    int64   `json:"bytes_done"`
	BytesTotal   int64   `json:"bytes_total"`
	RateBytes    float64 `json:"rate_bytes_per_second"`
	ETASeconds   float64 `json:"eta_seconds"`
	BytesFetched int64   `json:"bytes_fetched"`
	BytesWritten int64   `json:"bytes_written"`
}

// Result is the body of POST /agent/v1/result: the outcome of a write, success or failure.
type Result struct {
	Digest         string  `json:"digest"`
	ManifestHash   string  `json:"manifest_hash,omitempty"`
	Device         string  `json:"device,omitempty"`
	BytesFetched   int64   `json:"bytes_fetched"`
	BytesWritten   int64   `json:"bytes_written"`
	BytesSkipped   int64   `json:"bytes_skipped"`
	BlocksVerified int     `json:"blocks_verified"`
	Seconds        float64 `json:"seconds"`
	Error          string  `json:"error,omitempty"`
	FailedBlock    *int    `json:"failed_block,omitempty"`
}

// ResultReply says whether the server accepted the write as verified.
type ResultReply struct {
	Accepted bool   `json:"accepted"`
	Action   string `json:"action"`
}
