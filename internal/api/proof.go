package api

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
)

// Proof of possession: at the end of a write the agent asks for a challenge, a fresh nonce and
// a random set of the image's data blocks (block 0, the partition table and boot code written
// last, whenever it holds data); it reads those blocks back from the disk and returns the HMAC
// of each under the nonce (agentapi.ProofMAC); the server computes the same from its copy of
// the image and accepts the result only on a match. The digest, the manifest hash and the block
// count are all in the plan, so without this anyone holding a session could claim a write that
// never happened.

// ChallengeBlocks is how many data blocks a challenge names (fewer if the image has fewer).
const ChallengeBlocks = 16

// ChallengeTTL is how long a challenge can be answered.
const ChallengeTTL = 10 * time.Minute

type challenge struct {
	digest  images.Digest
	nonce   []byte
	blocks  []int64
	expires time.Time
}

// proofs holds the one outstanding challenge of each machine, and the nonce of its last accepted
// proof (so that a result sent again is answered again).
type proofs struct {
	blobs Blobs
	now   func() time.Time

	mu   sync.Mutex
	open map[string]*challenge // machine → its challenge
	done map[string]string     // machine → digest + " " + nonce of its last accepted proof
}

func newProofs(b Blobs) *proofs {
	return &proofs{blobs: b, now: time.Now, open: map[string]*challenge{}, done: map[string]string{}}
}

// issue makes a fresh challenge for machine over img, replacing any earlier one.
func (p *proofs) issue(machine string, img images.Image) (agentapi.Challenge, error) {
	if p.blobs == nil {
		return agentapi.Challenge{}, errors.New("no blob store")
	}
	m, err := p.blobs.Manifest(img.Digest)
	if err != nil {
		return agentapi.Challenge{}, fmt.Errorf("manifest of %s: %w", img.Digest, err)
	}
	var data []int64
	for i, b := range m.Blocks {
		if !b.Zero {
			data = append(data, int64(i))
		}
	}
	var seed [32]byte
	nonce := make([]byte, 32)
	if _, err := rand.Read(seed[:]); err != nil {
		return agentapi.Challenge{}, err
	}
	if _, err := rand.Read(nonce); err != nil {
		return agentapi.Challenge{}, err
	}
	rng := mrand.New(mrand.NewChaCha8(seed))
	rng.Shuffle(len(data), func(i, j int) { data[i], data[j] = data[j], data[i] })
	pick := data[:min(len(data), ChallengeBlocks)]
	if len(data) > 0 && !m.Blocks[0].Zero && !slices.Contains(pick, 0) {
		pick[len(pick)-1] = 0
	}
	pick = slices.Clone(pick)
	slices.Sort(pick)
	c := &challenge{digest: img.Digest, nonce: nonce, blocks: pick, expires: p.now().Add(ChallengeTTL)}
	p.mu.Lock()
	p.open[machine] = c
	p.mu.Unlock()
	return agentapi.Challenge{Digest: c.digest.String(), Nonce: hex.EncodeToString(nonce), Blocks: pick, Expires: c.expires.UTC().Format(time.RFC3339)}, nil
}

// outstanding reports whether machine has an unexpired challenge to answer.
func (p *proofs) outstanding(machine string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.open[machine]
	return c != nil && !p.now().After(c.expires)
}

// check verifies a proof against machine's outstanding challenge over img, which it uses up
// whatever the outcome: a wrong answer cannot be tried again with the same challenge.
func (p *proofs) check(machine string, img images.Image, proof *agentapi.Proof) error {
	if proof == nil {
		return errors.New("the result carries no proof of possession (GET /" + agentapi.ChallengePath + ", then send the proof with the result)")
	}
	p.mu.Lock()
	c := p.open[machine]
	delete(p.open, machine)
	p.mu.Unlock()
	nonce, err := hex.DecodeString(proof.Nonce)
	switch {
	case c == nil:
		return errors.New("no challenge is outstanding for this machine (ask for one, then answer it once)")
	case err != nil || !hmac.Equal(nonce, c.nonce):
		return errors.New("the proof answers another challenge than the outstanding one")
	case p.now().After(c.expires):
		return fmt.Errorf("the challenge expired at %s", c.expires.UTC().Format(time.RFC3339))
	case c.digest != img.Digest:
		return fmt.Errorf("the challenge was for %s, the machine is assigned %s", c.digest, img.Digest)
	case len(proof.MACs) != len(c.blocks):
		return fmt.Errorf("the proof has %d MACs for %d challenged blocks", len(proof.MACs), len(c.blocks))
	}
	f, err := p.blobs.Open(img.Digest)
	if err != nil {
		return fmt.Errorf("the server cannot read its copy of %s: %w", img.Digest, err)
	}
	defer f.Close()
	buf := make([]byte, images.BlockSize)
	for i, b := range c.blocks {
		n, err := f.ReadAt(buf, b*images.BlockSize)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("the server cannot read block %d of %s: %w", b, img.Digest, err)
		}
		got, err := hex.DecodeString(proof.MACs[i])
		if err != nil || !hmac.Equal(got, agentapi.ProofMAC(c.nonce, c.digest.String(), b, buf[:n])) {
			return fmt.Errorf("block %d on the disk does not match the image", b)
		}
	}
	return nil
}

// accepted remembers the proof that made machine's write count.
func (p *proofs) accept(machine, digest, nonce string) {
	p.mu.Lock()
	p.done[machine] = digest + " " + nonce
	p.mu.Unlock()
}

// acceptedBefore reports whether this digest and nonce already made machine's write count.
func (p *proofs) acceptedBefore(machine, digest, nonce string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.done[machine]
	return ok && hmac.Equal([]byte(a), []byte(digest+" "+nonce))
}
