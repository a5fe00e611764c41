// Package labos is a small bootable OS for the lab that proves which image it runs. This
// package builds it (Build) and holds its contract with imaged; the OS itself, the "os" mode of
// imaged's init, is the subpackage osinit.
//
// The image is a raw disk: an MBR, one bootable FAT partition with SYSLINUX, Debian's kernel and
// an initramfs whose /init is imaged, booted with imaged.mode=os. Its init hashes the first
// imaged.image_size bytes of its disk, gets an address by DHCP, fetches
// GET <imaged.url>/api/v1/metadata, checks in with POST <imaged.url>/api/v1/check-in
// {"digest": "sha256:…"} and answers every TCP connection on imaged.ready_port with ReadyLine.
// It runs entirely from its initramfs and never mounts or writes the disk, so the digest it
// reports is the image's (images.Digest: the SHA-256 of the raw image) exactly when the disk
// holds exactly the image.
//
// This package imports neither the agent nor osinit, so that the lab, the server and tests can
// build images and speak the contract without depending on the blade's code.
package labos

import "github.com/imaged/imaged/images"

// ModeName is the value of imaged.mode= that boots the os mode instead of the agent.
const ModeName = "os"

// DefaultReadyPort is the readiness port when imaged.ready_port is not given.
const DefaultReadyPort = 2222

// Paths of the imaged API that the OS calls, relative to imaged.url.
const (
	MetadataPath = "api/v1/metadata"
	CheckInPath  = "api/v1/check-in"
)

// Metadata is imaged's answer to GET /api/v1/metadata: who the calling machine is (imaged knows
// it by the request's source address, as a cloud metadata service does).
type Metadata struct {
	MachineID     string `json:"machine_id"`
	WorkerGroup   string `json:"worker_group"`
	WorkerType    string `json:"worker_type"`
	AssignedImage string `json:"assigned_image"`
	Hostname      string `json:"hostname"`
}

// CheckInRequest is the body of POST /api/v1/check-in: the digest of the image the OS runs.
type CheckInRequest struct {
	Digest string `json:"digest"` // "sha256:<hex>"
}

// CheckInResponse is imaged's 200 answer to a check-in.
type CheckInResponse struct {
	Stale bool `json:"stale"`
}

// ReadyLine is what the OS writes to every connection on its readiness port:
// "imaged-os sha256:<hex>\n". A probe that only connects learns that the OS is up; one that
// reads the line learns which image it runs.
func ReadyLine(d images.Digest) string { return "imaged-os " + d.String() + "\n" }
