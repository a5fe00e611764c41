package machines

import "time"

// Event is one line of a machine's history.
type Event struct {
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Machine string            `json:"machine"`
	Kind    string            `json:"kind"` // dhcp, tftp, script, http, hello, job, ...
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
	// Count is how many identical boot events this one stands for (repeats are coalesced into
	// the first: same kind and fields), Last when the latest came. Zero for a single event.
	Count int        `json:"count,omitempty"`
	Last  *time.Time `json:"last,omitempty"`
}

// NextSeq is the sequence number of a machine's event that follows last at time now: the time in
// microseconds, or one more than last if that is larger. Sequence numbers thus grow across
// restarts of the daemon, so that it can number events it keeps only in memory without reusing
// a number a client has seen.
func NextSeq(last uint64, now time.Time) uint64 {
	us := now.UnixMicro()
	if us < 0 {
		us = 0
	}
	return max(last+1, uint64(us))
}
