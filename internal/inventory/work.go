package inventory

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/machines"
)

// ErrNoPlan means the machine has no image assigned: the agent waits.
var ErrNoPlan = errors.New("no image assigned")

// Plan is what an agent is to write: the machine's assigned image.
type Plan struct {
	Machine machines.Machine
	Image   images.Image
}

// Plan returns the work of machine id: its assigned image, resolved in the catalog, unless the
// machine already runs it.
func (inv *Inventory) Plan(id string) (Plan, error) {
	m, err := inv.st.Machine(id)
	if err != nil {
		return Plan{}, err
	}
	if m.AssignedImage.IsZero() || m.AssignedImage == m.CurrentImage {
		return Plan{Machine: m}, ErrNoPlan
	}
	img, err := inv.st.ResolveImage(images.Ref{Digest: m.AssignedImage})
	if err != nil {
		return Plan{Machine: m}, fmt.Errorf("inventory: machine %s is assigned %s: %w", id, m.AssignedImage, err)
	}
	return Plan{Machine: m, Image: img}, nil
}

// Progress is an agent's latest report while it writes, and when it came.
type Progress struct {
	agentapi.Progress
	Time time.Time `json:"time"`
}

// ReportProgress keeps the latest progress of machine id in memory (it changes every second;
// the event log gets the start and the result, not every report).
func (inv *Inventory) ReportProgress(id string, rep agentapi.Progress) {
	p := Progress{Progress: rep, Time: inv.now().UTC()}
	inv.mu.Lock()
	if inv.progress == nil {
		inv.progress = map[string]Progress{}
	}
	_, started := inv.progress[id]
	inv.progress[id] = p
	inv.mu.Unlock()
	if !started {
		inv.Event(machines.Event{Machine: id, Kind: "write", Message: fmt.Sprintf("agent started writing %s (%d bytes)", p.Digest, p.BytesTotal)})
	}
}

// ProgressOf returns the latest progress report of machine id.
func (inv *Inventory) ProgressOf(id string) (Progress, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	p, ok := inv.progress[id]
	return p, ok
}

// Errors of RecordResult.
var (
	ErrResultMismatch = errors.New("the agent's result does not match the assigned image")
	ErrProof          = errors.New("the agent's proof of possession failed")
)

// Prover checks the proof of possession that a successful result carries, against the image of
// the machine's plan.
type Prover func(p Plan, proof *agentapi.Proof) error

// RecordResult checks an agent's result against the catalog and records it. A failed write is
// recorded as such. A success makes the image the machine's current image only if the result
// names the assigned digest and manifest hash, its counts add up to the manifest's (every data
// block verified, written + zeroed + skipped bytes = the image's size), and prove accepts its
// proof of possession: the agent's word alone is never enough. A refusal is ErrResultMismatch or
// ErrProof, with the reasons.
func (inv *Inventory) RecordResult(id string, r agentapi.Result, prove Prover) (machines.Machine, error) {
	inv.mu.Lock()
	delete(inv.progress, id)
	inv.mu.Unlock()
	plan, err := inv.Plan(id)
	if errors.Is(err, ErrNoPlan) {
		return plan.Machine, fmt.Errorf("%w: no image is assigned to %s that this result could be for", ErrResultMismatch, id)
	}
	if err != nil {
		return plan.Machine, err
	}
	fields := map[string]string{"digest": r.Digest, "device": r.Device, "bytes_written": fmt.Sprint(r.BytesWritten),
		"blocks_verified": fmt.Sprint(r.BlocksVerified), "seconds": fmt.Sprintf("%.1f", r.Seconds)}
	if r.Error != "" {
		inv.Event(machines.Event{Machine: id, Kind: "write", Message: "agent failed to write " + plan.Image.Ref().String() + ": " + r.Error, Fields: fields})
		return plan.Machine, nil
	}
	if problems := resultProblems(plan.Image, r); len(problems) > 0 {
		inv.Event(machines.Event{Machine: id, Kind: "write", Message: "agent result refused: " + strings.Join(problems, "; "), Fields: fields})
		return plan.Machine, fmt.Errorf("%w: %s", ErrResultMismatch, strings.Join(problems, "; "))
	}
	if err := prove(plan, r.Proof); err != nil {
		inv.Event(machines.Event{Machine: id, Kind: "write", Message: "agent result refused: " + err.Error(), Fields: fields})
		return plan.Machine, fmt.Errorf("%w: %v", ErrProof, err)
	}
	if err := inv.st.SetCurrentImage(id, plan.Image.Digest); err != nil {
		return plan.Machine, err
	}
	inv.Event(machines.Event{Machine: id, Kind: "write", Message: fmt.Sprintf("agent wrote and verified %s on %s: %d bytes written, %d blocks verified in %.1f s, proof of possession checked",
		plan.Image.Ref(), r.Device, r.BytesWritten, r.BlocksVerified, r.Seconds), Fields: fields})
	m, err := inv.st.Machine(id)
	if err == nil {
		inv.mu.Lock()
		inv.byID[id] = m
		inv.mu.Unlock()
	}
	return m, err
}

// resultProblems lists how a successful result disagrees with the image it claims to have
// written. The digest and the manifest hash must be the plan's, as the plan wrote them.
func resultProblems(img images.Image, r agentapi.Result) []string {
	var problems []string
	if r.Digest != img.Digest.String() {
		problems = append(problems, fmt.Sprintf("digest %s, assigned %s", r.Digest, img.Digest))
	}
	if r.ManifestHash != img.ManifestHash.String() {
		problems = append(problems, fmt.Sprintf("manifest %s, catalog %s", r.ManifestHash, img.ManifestHash))
	}
	if r.BlocksVerified != img.DataBlocks {
		problems = append(problems, fmt.Sprintf("%d blocks verified, the manifest has %d data blocks", r.BlocksVerified, img.DataBlocks))
	}
	inRange := func(n int64) bool { return n >= 0 && n <= img.Size } // and the sum cannot overflow
	if !inRange(r.BytesWritten) || !inRange(r.BytesZeroed) || !inRange(r.BytesSkipped) || r.BytesWritten+r.BytesZeroed+r.BytesSkipped != img.Size {
		problems = append(problems, fmt.Sprintf("%d bytes written + %d zeroed + %d skipped, the image has %d", r.BytesWritten, r.BytesZeroed, r.BytesSkipped, img.Size))
	}
	return problems
}

// Assign makes img the image machine id is to run, records who asked in its timeline, and
// returns the machine as stored. When img was resolved through a channel (img.Channel), the
// machine follows that channel from now on; else it follows none.
func (inv *Inventory) Assign(id string, img images.Image, by string) (machines.Machine, error) {
	if err := inv.st.AssignImage(id, img.Digest, img.Channel); err != nil {
		return machines.Machine{}, err
	}
	m, err := inv.st.Machine(id)
	if err != nil {
		return machines.Machine{}, err
	}
	inv.mu.Lock()
	inv.byID[id] = m
	inv.mu.Unlock()
	msg, fields := fmt.Sprintf("assigned %s (%s) by %s", img.Ref(), img.Digest, by), map[string]string{"image": img.Ref().String(), "digest": img.Digest.String(), "by": by}
	if img.Channel != "" {
		msg = fmt.Sprintf("assigned %s (%s) through %s by %s", img.Ref(), img.Digest, img.Channel, by)
		fields["channel"] = img.Channel
	}
	inv.Event(machines.Event{Machine: id, Kind: "assign", Message: msg, Fields: fields})
	return m, nil
}

// ClearCurrentImage forgets the image machine id runs: its disk is about to be overwritten.
func (inv *Inventory) ClearCurrentImage(id string) error {
	if err := inv.st.SetCurrentImage(id, images.Digest{}); err != nil {
		return err
	}
	m, err := inv.st.Machine(id)
	if err != nil {
		return err
	}
	inv.mu.Lock()
	inv.byID[id] = m
	inv.mu.Unlock()
	return nil
}
