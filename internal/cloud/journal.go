package cloud

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/atomicfile"
)

// A push journal records, for one image pushed with one client token, the snapshot it writes and
// every block EBS accepted, one line each, appended as they are accepted:
//
//	imaged push journal 1
//	digest sha256:…
//	base-token imaged-us-east-1-…
//	token imaged-us-east-1-…-2
//	snapshot snap-…
//	block 17
//	block 3
//
// EBS has no way to list the blocks of a pending snapshot ("The snapshot can be accessed only if
// it has a completed status", EBS direct APIs FAQ), so this file is what lets an interrupted push
// resume. A lost tail (a crash before the kernel wrote it) only means some blocks are sent twice,
// which EBS allows while the snapshot is pending: a block written again replaces the first.
const journalMagic = "imaged push journal 1"

// maxTokenGenerations bounds how often a push starts over with a fresh client token because the
// snapshot of the previous token ended in error (its StartSnapshot timeout passed).
const maxTokenGenerations = 5

type journal struct {
	path      string
	snapshot  string
	completed bool         // the snapshot of this token is already complete
	accepted  map[int]bool // blocks EBS accepted before, for this snapshot

	mu sync.Mutex
	f  *os.File
}

type journalFile struct {
	digest, base, token, snapshot string
	accepted                      map[int]bool
}

// readJournal reads a journal; a missing file is (nil, nil). A torn last line is ignored.
func readJournal(path string) (*journalFile, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cloud: push journal: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() || sc.Text() != journalMagic {
		return nil, fmt.Errorf("cloud: push journal %s: not a journal (first line should be %q); remove it to push from the start", path, journalMagic)
	}
	jf := &journalFile{accepted: map[int]bool{}}
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "digest":
			jf.digest = v
		case "base-token":
			jf.base = v
		case "token":
			jf.token = v
		case "snapshot":
			jf.snapshot = v
		case "block":
			if i, err := strconv.Atoi(v); err == nil && i >= 0 {
				jf.accepted[i] = true
			}
		}
	}
	return jf, sc.Err()
}

// openJournal starts (or resumes) the snapshot: StartSnapshot with the client token, which EBS
// answers with the same snapshot while it is pending. When the journal names that snapshot, its
// blocks are not sent again. A snapshot of this token that ended in error (timed out) is left
// behind and a fresh token starts a new one.
func openJournal(ctx context.Context, c EBS, m *images.Manifest, opt PushOptions) (*journal, error) {
	j := &journal{path: opt.Journal, accepted: map[int]bool{}}
	var prev *journalFile
	if opt.Journal != "" {
		var err error
		if prev, err = readJournal(opt.Journal); err != nil {
			return nil, err
		}
		if prev != nil && (prev.digest != m.Digest.String() || prev.base != opt.ClientToken) {
			prev = nil // another image's or another token's: start over
		}
	}
	token := opt.ClientToken
	if prev != nil && prev.token != "" {
		token = prev.token
	}
	gib := int64(1) << 30
	for gen := 1; ; gen++ {
		in := &ebs.StartSnapshotInput{VolumeSize: aws.Int64((m.Size + gib - 1) / gib), Timeout: aws.Int32(60)}
		if token != "" {
			in.ClientToken = aws.String(token)
		}
		if opt.Description != "" {
			in.Description = aws.String(opt.Description)
		}
		for _, k := range slices.Sorted(maps.Keys(opt.Tags)) {
			in.Tags = append(in.Tags, ebstypes.Tag{Key: aws.String(k), Value: aws.String(opt.Tags[k])})
		}
		out, err := c.StartSnapshot(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("cloud: start snapshot: %w", err)
		}
		j.snapshot = aws.ToString(out.SnapshotId)
		switch out.Status {
		case ebstypes.StatusCompleted:
			j.completed = true
		case ebstypes.StatusError:
			if token == "" || gen == maxTokenGenerations {
				return nil, fmt.Errorf("cloud: snapshot %s (client token %q) is in the error state: EBS gave up on it (its 60-minute timeout passed with no block written, or it failed); delete it and push again", j.snapshot, token)
			}
			token = fmt.Sprintf("%s-%d", opt.ClientToken, gen+1)
			continue
		}
		break
	}
	if prev != nil && prev.snapshot == j.snapshot {
		j.accepted = prev.accepted
	}
	if opt.Journal == "" || j.completed {
		return j, nil
	}
	// Rewrite the journal compactly (what it knew, for this snapshot), then append to it.
	var b strings.Builder
	fmt.Fprintf(&b, "%s\ndigest %s\nbase-token %s\ntoken %s\nsnapshot %s\n", journalMagic, m.Digest, opt.ClientToken, token, j.snapshot)
	for i := range j.accepted {
		fmt.Fprintf(&b, "block %d\n", i)
	}
	if err := os.MkdirAll(filepath.Dir(opt.Journal), 0o750); err != nil {
		return nil, fmt.Errorf("cloud: push journal: %w", err)
	}
	if err := atomicfile.WriteFile(opt.Journal, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("cloud: push journal: %w", err)
	}
	f, err := os.OpenFile(opt.Journal, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("cloud: push journal: %w", err)
	}
	j.f = f
	return j, nil
}

// accept records that EBS accepted block i.
func (j *journal) accept(i int) error {
	if j.f == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := fmt.Fprintf(j.f, "block %d\n", i); err != nil {
		return fmt.Errorf("cloud: push journal %s: %w", j.path, err)
	}
	return nil
}

func (j *journal) close() {
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
}

// remove deletes the journal of a complete snapshot.
func (j *journal) remove() error {
	j.close()
	if j.path == "" {
		return nil
	}
	if err := os.Remove(j.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cloud: push journal: %w", err)
	}
	return nil
}
