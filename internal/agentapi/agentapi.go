// Package agentapi is the wire format of imaged's agent API, /agent/v1: the JSON bodies that the
// agent (on the blade) and the server exchange. Both sides import these types, so that they
// cannot drift apart. It is a leaf with no dependencies beyond the standard library, safe to
// ship in the agent's initramfs.
//
//	POST /agent/v1/hello      HelloRequest → HelloReply
//	GET  /agent/v1/plan       → Plan
//	POST /agent/v1/progress   Progress → 204
//	GET  /agent/v1/challenge  → Challenge
//	POST /agent/v1/result     Result → ResultReply
//
// The hello carries the per-boot token from the kernel command line in its body; the token is
// good for one hello, from the address imaged leased to the MAC, and the hello's reply holds a
// session token. Every request after the hello carries that session token (Authorization:
// Bearer) and the MAC (HeaderMAC), from the same address.
//
// A successful write ends with a proof of possession: the agent asks for a challenge (a fresh
// nonce and a random set of the image's data blocks), reads those blocks back from the disk and
// sends ProofMAC of each with its result; the server computes the same from its copy of the
// image and accepts the result only on a match.
package agentapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// Paths, relative to the server's URL (the kernel command line's imaged.server).
const (
	HelloPath     = "agent/v1/hello"
	PlanPath      = "agent/v1/plan"
	ProgressPath  = "agent/v1/progress"
	ChallengePath = "agent/v1/challenge"
	ResultPath    = "agent/v1/result"
)

// HeaderMAC names the netbooted NIC's MAC in every request after the hello.
const HeaderMAC = "X-Imaged-MAC"

// HelloRequest is the body of POST /agent/v1/hello. The agent's address is not in it: the
// server takes it from the connection.
type HelloRequest struct {
	MAC           string  `json:"mac"`
	Token         string  `json:"token"`
	AgentVersion  string  `json:"agent_version,omitempty"`
	UptimeSeconds float64 `json:"uptime_seconds,omitempty"` // since the kernel booted
}

// HelloReply tells the agent who it is and gives it the session token for every later request.
type HelloReply struct {
	MachineID string `json:"machine_id,omitempty"`
	Action    string `json:"action"`            // "wait": stay up and ask for a plan
	Session   string `json:"session,omitempty"` // bearer token of the agent's later requests
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

// Result is the body of POST /agent/v1/result: the outcome of a write, success or failure. A
// success carries the Proof of the latest challenge; its counts must add up to the manifest's:
// bytes written + zeroed + skipped = the image's size, blocks verified = its data blocks.
type Result struct {
	Digest         string  `json:"digest"`
	ManifestHash   string  `json:"manifest_hash,omitempty"`
	Device         string  `json:"device,omitempty"`
	BytesFetched   int64   `json:"bytes_fetched"`
	BytesWritten   int64   `json:"bytes_written"` // data blocks written, each verified first
	BytesZeroed    int64   `json:"bytes_zeroed"`  // zero blocks zeroed on the disk
	BytesSkipped   int64   `json:"bytes_skipped"` // zero blocks the disk was known to hold
	BlocksVerified int     `json:"blocks_verified"`
	Seconds        float64 `json:"seconds"`
	Error          string  `json:"error,omitempty"`
	FailedBlock    *int    `json:"failed_block,omitempty"`
	Proof          *Proof  `json:"proof,omitempty"`
}

// Challenge is the body of GET /agent/v1/challenge: prove that the disk holds the image by
// reading Blocks back from it. A challenge is good for one result, until Expires.
type Challenge struct {
	Digest  string  `json:"digest"`
	Nonce   string  `json:"nonce"`  // hex, 32 random bytes
	Blocks  []int64 `json:"blocks"` // block numbers (BlockSize units), data blocks only
	Expires string  `json:"expires"`
}

// Proof answers a Challenge: MACs[i] is the hex ProofMAC of Blocks[i] as read from the disk.
type Proof struct {
	Nonce string   `json:"nonce"`
	MACs  []string `json:"macs"`
}

// ProofMAC is HMAC-SHA256 keyed with the challenge's nonce over the image's digest, the block
// number and the block's bytes (the whole block; the last block of an image whose size is not
// a multiple of the block size is only as long as the image). The server computes it from its
// copy of the image; only a disk that holds the block gives the agent the same.
func ProofMAC(nonce []byte, digest string, block int64, data []byte) []byte {
	m := hmac.New(sha256.New, nonce)
	m.Write([]byte("imaged proof v1\x00"))
	m.Write([]byte(digest))
	m.Write(binary.BigEndian.AppendUint64([]byte{0}, uint64(block)))
	m.Write(data)
	return m.Sum(nil)
}

// ResultReply says whether the server accepted the write as verified.
type ResultReply struct {
	Accepted bool   `json:"accepted"`
	Action   string `json:"action"`
}
