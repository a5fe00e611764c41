package awsfake

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// EBS direct APIs, restJson1 (API version 2019-11-02). Errors are JSON bodies
// with an X-Amzn-ErrorType header; status codes follow the "Errors" section
// of each action in the EBS direct APIs API Reference.

// ebsError is an EBS direct API error response.
type ebsError struct {
	status int
	code   string
	reason string
	msg    string
}

func validation(reason, format string, args ...any) *ebsError {
	return &ebsError{http.StatusBadRequest, "ValidationException", reason, fmt.Sprintf(format, args...)}
}

func snapshotNotFound(id string) *ebsError {
	return &ebsError{http.StatusNotFound, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND",
		fmt.Sprintf("The snapshot '%s' does not exist.", id)}
}

// ebsSnapshot returns snapshot id, which the EBS direct APIs see only in its own region.
func (f *Fake) ebsSnapshot(region, id string) (*snapshot, *ebsError) {
	s, ok := f.snapshots[id]
	if !ok || s.Region != region {
		return nil, snapshotNotFound(id)
	}
	return s, nil
}

func writeEBSError(w http.ResponseWriter, e *ebsError) {
	body := map[string]string{"message": e.msg}
	if e.reason != "" {
		body["Reason"] = e.reason
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", e.code)
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func ebsFault(ft *Fault) *ebsError {
	switch ft.Kind {
	case FaultThrottle:
		reason := ft.Reason
		if reason == "" {
			reason = "ACCOUNT_THROTTLED"
		}
		// RequestThrottledException: HTTP Status Code 400.
		return &ebsError{http.StatusBadRequest, "RequestThrottledException", reason,
			"The number of API requests has exceeded the maximum allowed API request throttling limit for the snapshot."}
	case FaultThrottling429:
		return &ebsError{http.StatusTooManyRequests, "ThrottlingException", "", "Rate exceeded"}
	case FaultUnavailable:
		return &ebsError{http.StatusServiceUnavailable, "ServiceUnavailableException", "", "Service unavailable"}
	default:
		return &ebsError{http.StatusInternalServerError, "InternalServerException", "", "An internal error has occurred."}
	}
}

func (f *Fake) serveEBS(w http.ResponseWriter, r *http.Request, region string) {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var e *ebsError
	switch {
	case r.Method == http.MethodPost && len(p) == 1 && p[0] == "snapshots":
		e = f.startSnapshot(w, r, region)
	case r.Method == http.MethodPut && len(p) == 4 && p[0] == "snapshots" && p[2] == "blocks":
		e = f.putSnapshotBlock(w, r, region, p[1], p[3])
	case r.Method == http.MethodPost && len(p) == 3 && p[0] == "snapshots" && p[1] == "completion":
		e = f.completeSnapshot(w, r, region, p[2])
	default:
		e = &ebsError{http.StatusNotFound, "UnknownOperationException", "", r.Method + " " + r.URL.Path}
	}
	if e != nil {
		writeEBSError(w, e)
	}
}

type ebsTag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

type startSnapshotRequest struct {
	VolumeSize       *int64   `json:"VolumeSize"`
	ClientToken      string   `json:"ClientToken"`
	Description      string   `json:"Description"`
	Encrypted        bool     `json:"Encrypted"`
	KmsKeyArn        string   `json:"KmsKeyArn"`
	ParentSnapshotID string   `json:"ParentSnapshotId"`
	Tags             []ebsTag `json:"Tags"`
	Timeout          *int32   `json:"Timeout"`
}

// maxVolumeSize is the largest EBS volume in GiB (64 TiB).
const maxVolumeSize = 65536

func (f *Fake) startSnapshot(w http.ResponseWriter, r *http.Request, region string) *ebsError {
	var req startSnapshotRequest
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&req); err != nil {
		return validation("INVALID_PARAMETER_VALUE", "malformed request body: %v", err)
	}
	now, ft := f.begin("StartSnapshot")
	defer f.mu.Unlock()
	if ft != nil {
		return ebsFault(ft)
	}
	// VolumeSize: "The size of the volume, in GiB." Required.
	if req.VolumeSize == nil || *req.VolumeSize < 1 || *req.VolumeSize > maxVolumeSize {
		return validation("INVALID_VOLUME_SIZE", "VolumeSize must be between 1 and %d GiB", maxVolumeSize)
	}
	if req.ParentSnapshotID != "" {
		if _, e := f.ebsSnapshot(region, req.ParentSnapshotID); e != nil {
			return e
		}
	}
	// Timeout: "The amount of time (in minutes) after which the snapshot is
	// automatically cancelled ... default 60 ... between 10 and 4320."
	timeout := int32(60)
	if req.Timeout != nil {
		if *req.Timeout < 10 || *req.Timeout > 4320 {
			return validation("INVALID_PARAMETER_VALUE", "Timeout must be between 10 and 4320 minutes")
		}
		timeout = *req.Timeout
	}
	tags := map[string]string{}
	for _, t := range req.Tags {
		if t.Key == "" || strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
			return validation("INVALID_TAG", "invalid tag key %q", t.Key)
		}
		tags[t.Key] = t.Value
	}
	// ClientToken: "Idempotency ensures that an API request completes only
	// once. With an idempotent request, if the original request completes
	// successfully, the subsequent retries return the result from the
	// original successful request". A different request with the same token
	// is a ConflictException (HTTP 503).
	if req.ClientToken != "" {
		if id, ok := f.tokens[region+"/"+req.ClientToken]; ok {
			s := f.snapshots[id]
			if s.VolumeSize != *req.VolumeSize || s.Description != req.Description || s.ParentSnapshotID != req.ParentSnapshotID {
				return &ebsError{http.StatusServiceUnavailable, "ConflictException", "",
					"The request uses the same client token as a previous, but non-identical request."}
			}
			writeJSON(w, http.StatusCreated, startSnapshotResponse(s, f.opts.AccountID))
			return nil
		}
	}
	s := &snapshot{
		Snapshot: Snapshot{
			ID:               f.newID("snap"),
			Region:           region,
			OwnerID:          f.opts.AccountID,
			VolumeSize:       *req.VolumeSize,
			State:            "pending",
			Description:      req.Description,
			Tags:             tags,
			Timeout:          timeout,
			ClientToken:      req.ClientToken,
			ParentSnapshotID: req.ParentSnapshotID,
			StartTime:        now,
			Blocks:           map[int32]Block{},
			DirectAPI:        true,
		},
		lastActivity: now,
	}
	f.snapshots[s.ID] = s
	if req.ClientToken != "" {
		f.tokens[region+"/"+req.ClientToken] = s.ID
	}
	writeJSON(w, http.StatusCreated, startSnapshotResponse(s, f.opts.AccountID))
	return nil
}

func startSnapshotResponse(s *snapshot, owner string) map[string]any {
	tags := []ebsTag{}
	for _, k := range sortedKeys(s.Tags) {
		tags = append(tags, ebsTag{k, s.Tags[k]})
	}
	resp := map[string]any{
		"SnapshotId":  s.ID,
		"OwnerId":     owner,
		"Status":      s.State,
		"StartTime":   float64(s.StartTime.UnixMilli()) / 1000,
		"VolumeSize":  s.VolumeSize,
		"BlockSize":   BlockSize,
		"Tags":        tags,
		"Description": s.Description,
	}
	if s.ParentSnapshotID != "" {
		resp["ParentSnapshotId"] = s.ParentSnapshotID
	}
	return resp
}

func (f *Fake) putSnapshotBlock(w http.ResponseWriter, r *http.Request, region, id, index string) *ebsError {
	// Read and hash outside the lock; at most one byte more than a block.
	body, err := io.ReadAll(io.LimitReader(r.Body, BlockSize+1))
	if err != nil {
		return validation("INVALID_PARAMETER_VALUE", "reading block data: %v", err)
	}
	sum := sha256.Sum256(body)

	now, ft := f.begin("PutSnapshotBlock")
	defer f.mu.Unlock()
	if ft != nil {
		return ebsFault(ft)
	}
	s, e := f.ebsSnapshot(region, id)
	if e != nil {
		return e
	}
	// Per-snapshot request rate (EBS direct API quota: 1,000
	// PutSnapshotBlock requests per second per snapshot).
	if !f.allow(id, now) {
		return &ebsError{http.StatusBadRequest, "RequestThrottledException", "RESOURCE_LEVEL_THROTTLE",
			"The number of API requests has exceeded the maximum allowed API request throttling limit for the snapshot."}
	}
	// Blocks can be written only to a snapshot in the pending state.
	if s.State != "pending" || !s.completeAt.IsZero() {
		return validation("INVALID_SNAPSHOT_ID", "The snapshot '%s' is not in the pending state (state %s).", id, s.State)
	}
	// BlockIndex: "A block index is a logical index in units of 512 KiB
	// blocks"; it must lie within VolumeSize.
	bi, err := strconv.ParseInt(index, 10, 32)
	blocks := s.VolumeSize << 30 / BlockSize
	if err != nil || bi < 0 || bi >= blocks {
		return validation("INVALID_BLOCK", "BlockIndex %s is outside the volume (%d blocks).", index, blocks)
	}
	// DataLength: "Currently, the only supported size is 524288 bytes." The
	// header must describe the body actually sent.
	dl, err := strconv.Atoi(r.Header.Get("X-Amz-Data-Length"))
	switch {
	case err != nil:
		return validation("INVALID_PARAMETER_VALUE", "missing or malformed x-amz-Data-Length")
	case dl != BlockSize:
		return validation("INVALID_PARAMETER_VALUE", "DataLength %d: the only supported size is %d bytes", dl, BlockSize)
	case len(body) != dl:
		return validation("INVALID_PARAMETER_VALUE", "body has %d bytes, x-amz-Data-Length says %d", len(body), dl)
	}
	// ChecksumAlgorithm: "Valid Values: SHA256"; Checksum: "The checksum
	// must be generated using the SHA256 algorithm ... Base64-encoded".
	if alg := r.Header.Get("X-Amz-Checksum-Algorithm"); alg != "SHA256" {
		return validation("INVALID_PARAMETER_VALUE", "unsupported checksum algorithm %q", alg)
	}
	want := base64.StdEncoding.EncodeToString(sum[:])
	if got := r.Header.Get("X-Amz-Checksum"); got != want {
		return validation("INVALID_PARAMETER_VALUE", "The checksum %q does not match the data (SHA256 %s).", got, want)
	}
	// Progress: "The progress of the write process, as a percentage." 0-100.
	if v := r.Header.Get("X-Amz-Progress"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 100 {
			return validation("INVALID_PARAMETER_VALUE", "Progress %q must be 0-100", v)
		}
		s.Progress = int32(p)
	}
	blk := Block{Checksum: want}
	if !f.opts.DiscardBlockData {
		blk.Data = body
	}
	s.Blocks[int32(bi)] = blk
	s.lastActivity = now
	w.Header().Set("X-Amz-Checksum", want)
	w.Header().Set("X-Amz-Checksum-Algorithm", "SHA256")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (f *Fake) completeSnapshot(w http.ResponseWriter, r *http.Request, region, id string) *ebsError {
	now, ft := f.begin("CompleteSnapshot")
	defer f.mu.Unlock()
	if ft != nil {
		return ebsFault(ft)
	}
	s, e := f.ebsSnapshot(region, id)
	if e != nil {
		return e
	}
	if s.State != "pending" {
		return validation("INVALID_SNAPSHOT_ID", "The snapshot '%s' is not in the pending state (state %s).", id, s.State)
	}
	// ChangedBlocksCount: "The number of blocks that were written to the
	// snapshot." Required, and must match what was written.
	n, err := strconv.Atoi(r.Header.Get("X-Amz-ChangedBlocksCount"))
	if err != nil || n < 0 {
		return validation("INVALID_PARAMETER_VALUE", "missing or malformed x-amz-ChangedBlocksCount")
	}
	if n != len(s.Blocks) {
		return validation("INVALID_PARAMETER_VALUE", "ChangedBlocksCount %d does not match the %d blocks written", n, len(s.Blocks))
	}
	// Checksum (optional): "An aggregated Base-64 SHA256 checksum based on
	// the checksums of each written block"; ChecksumAggregationMethod LINEAR:
	// the checksum of the concatenated raw block checksums in ascending
	// block index order; ChecksumAlgorithm SHA256.
	if sum := r.Header.Get("X-Amz-Checksum"); sum != "" {
		if alg := r.Header.Get("X-Amz-Checksum-Algorithm"); alg != "SHA256" {
			return validation("INVALID_PARAMETER_VALUE", "unsupported checksum algorithm %q", alg)
		}
		if m := r.Header.Get("X-Amz-Checksum-Aggregation-Method"); m != "LINEAR" {
			return validation("INVALID_PARAMETER_VALUE", "unsupported checksum aggregation method %q", m)
		}
		if want := LinearChecksum(s.Blocks); sum != want {
			return validation("INVALID_PARAMETER_VALUE", "The aggregate checksum %q does not match the blocks written (%s).", sum, want)
		}
		s.AggregateChecksum = sum
	}
	s.ChangedBlocksCount = int32(n)
	s.completeAt = now.Add(f.opts.SnapshotCompletionDelay)
	f.advance(now)
	writeJSON(w, http.StatusAccepted, map[string]string{"Status": "pending"})
	return nil
}

// LinearChecksum is the EBS LINEAR aggregate of blocks: base64 of the SHA-256
// of the concatenated raw SHA-256 checksums of all blocks, in ascending block
// index order.
func LinearChecksum(blocks map[int32]Block) string {
	idx := make([]int32, 0, len(blocks))
	for i := range blocks {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	h := sha256.New()
	for _, i := range idx {
		raw, _ := base64.StdEncoding.DecodeString(blocks[i].Checksum)
		h.Write(raw)
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}
