package inventory

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"time"

	"github.com/imaged/imaged/internal/machines"
)

// Errors of IssueToken, Hello and Authorize.
var (
	ErrBadToken       = errors.New("boot token not valid for this MAC (unknown, expired, or issued to another machine)")
	ErrTokenUsed      = errors.New("boot token already used by a hello; a new hello needs a new netboot")
	ErrWrongAddress   = errors.New("request from another address than the token is bound to")
	ErrNotLeased      = errors.New("imaged has leased no address to this MAC")
	ErrUnknownMachine = errors.New("machine not in the inventory")
)

// SessionTTL bounds an agent session: longer than any write (the writing phase's default
// timeout is 2 h), short enough that a forgotten one does not stay good for days.
const SessionTTL = 24 * time.Hour

// HelloRetryWindow is how long after a hello the same token from the same address is taken as
// the agent asking again (it did not get the reply): the hello is answered again with a fresh
// session that replaces the first. From another address, or later, a used token is refused.
const HelloRetryWindow = time.Minute

// MaxUnknownTokens bounds the boot tokens of discovery boots (MACs not in the inventory) kept
// at once; the oldest goes first.
const MaxUnknownTokens = 256

// bootToken is a boot token the daemon issued: its record, and the token itself, kept in memory
// only, so that a script fetched twice in one netboot hands out the same token.
type bootToken struct {
	rec       machines.BootToken
	plain     string
	persisted bool
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func newSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// TokenRequest is a boot script being served with the agent profile.
type TokenRequest struct {
	Machine string // "" for a discovery boot of a MAC not in the inventory
	MAC     net.HardwareAddr
	Profile string
	Remote  netip.Addr // the address that fetched the script
	// Persist says a job waits for this netboot: the token is stored, so that the agent's hello
	// still counts after a restart of the daemon. Other tokens live in memory only.
	Persist bool
}

// IssueToken returns the boot token of one netboot of req.MAC. With Config.BindToLease the
// script must come from the address imaged leased to the MAC, and the token is bound to it. A
// script fetched again during the same netboot (same MAC and address, token unused and in the
// first half of its life) gets the same token, so that repeated fetches cost nothing.
func (inv *Inventory) IssueToken(req TokenRequest) (string, error) {
	remote := req.Remote.Unmap()
	var bound netip.Addr
	if inv.cfg.BindToLease {
		inv.mu.RLock()
		lease, ok := inv.leases[req.MAC.String()]
		inv.mu.RUnlock()
		switch {
		case !ok:
			return "", fmt.Errorf("%w %s; the boot script must come from the address imaged's DHCP server gave it", ErrNotLeased, req.MAC)
		case lease != remote:
			return "", fmt.Errorf("%w: the boot script of %s was asked for from %s, but imaged leased it %s", ErrWrongAddress, req.MAC, remote, lease)
		}
		bound = lease
	}
	key := req.Machine
	if key == "" {
		key = "unknown-" + req.MAC.String()
	}
	now := inv.now()
	inv.tokMu.Lock()
	defer inv.tokMu.Unlock()
	inv.sweepTokensLocked(now)
	if t := inv.tokens[inv.latest[key]]; t != nil && t.rec.Used == nil && bytes.Equal(t.rec.MAC, req.MAC) &&
		t.rec.Addr == bound && now.Sub(t.rec.Issued) < inv.cfg.TokenTTL/2 {
		if req.Persist && !t.persisted {
			if err := inv.st.PutToken(t.rec); err != nil {
				return "", fmt.Errorf("inventory: store token: %w", err)
			}
			t.persisted = true
		}
		return t.plain, nil
	}
	plain, err := newSecret()
	if err != nil {
		return "", err
	}
	t := &bootToken{plain: plain, rec: machines.BootToken{Hash: hashToken(plain), MachineID: req.Machine, MAC: machines.MAC(req.MAC),
		Profile: req.Profile, Issued: now, Expires: now.Add(inv.cfg.TokenTTL), Addr: bound}}
	if req.Persist {
		if err := inv.st.PutToken(t.rec); err != nil {
			return "", fmt.Errorf("inventory: store token: %w", err)
		}
		t.persisted = true
	}
	// One outstanding token per machine: the newest netboot is the one that counts.
	delete(inv.tokens, inv.latest[key])
	inv.tokens[t.rec.Hash] = t
	inv.latest[key] = t.rec.Hash
	if req.Machine == "" {
		inv.boundUnknownTokensLocked()
	}
	return plain, nil
}

// sweepTokensLocked forgets expired tokens.
func (inv *Inventory) sweepTokensLocked(now time.Time) {
	for h, t := range inv.tokens {
		if now.After(t.rec.Expires) {
			delete(inv.tokens, h)
		}
	}
	for k, h := range inv.latest {
		if inv.tokens[h] == nil {
			delete(inv.latest, k)
		}
	}
}

// boundUnknownTokensLocked keeps at most MaxUnknownTokens tokens of discovery boots.
func (inv *Inventory) boundUnknownTokensLocked() {
	var n int
	var oldest *bootToken
	for _, t := range inv.tokens {
		if t.rec.MachineID != "" {
			continue
		}
		n++
		if oldest == nil || t.rec.Issued.Before(oldest.rec.Issued) {
			oldest = t
		}
	}
	if n > MaxUnknownTokens {
		delete(inv.tokens, oldest.rec.Hash)
		delete(inv.latest, "unknown-"+oldest.rec.MAC.String())
	}
}

// token finds a boot token by hash: issued by this process, or stored for a job by an earlier
// one.
func (inv *Inventory) tokenLocked(hash string) (*bootToken, bool) {
	if t := inv.tokens[hash]; t != nil {
		return t, true
	}
	rec, err := inv.st.Token(hash)
	if err != nil {
		return nil, false
	}
	t := &bootToken{rec: rec, persisted: true}
	inv.tokens[hash] = t
	return t, true
}

// HelloRequest is what an agent sends when it comes up, and where from.
type HelloRequest struct {
	MAC          net.HardwareAddr
	Token        string
	Remote       netip.Addr // the connection's source address, never the body's word
	AgentVersion string
	Uptime       float64
}

// Hello checks an agent's boot token (the MAC it was issued for, its lifetime, the address it
// is bound to, not used before), consumes it, records the hello and returns the machine and the
// session token for the agent's later requests (none for a discovery boot).
func (inv *Inventory) Hello(req HelloRequest) (machines.Machine, string, error) {
	remote := req.Remote.Unmap()
	now := inv.now()
	hash := hashToken(req.Token)
	inv.tokMu.Lock()
	defer inv.tokMu.Unlock()
	t, ok := inv.tokenLocked(hash)
	if !ok || now.After(t.rec.Expires) || subtle.ConstantTimeCompare(t.rec.MAC, req.MAC) != 1 {
		return machines.Machine{}, "", ErrBadToken
	}
	if t.rec.Addr.IsValid() && t.rec.Addr != remote {
		return machines.Machine{}, "", fmt.Errorf("%w: the token of %s is bound to %s (its DHCP lease); the hello came from %s", ErrWrongAddress, req.MAC, t.rec.Addr, remote)
	}
	if t.rec.Used != nil && (t.rec.UsedFrom != remote || now.Sub(*t.rec.Used) > HelloRetryWindow) {
		return machines.Machine{}, "", ErrTokenUsed
	}
	used := now.UTC()
	rec := t.rec
	rec.Used, rec.UsedFrom = &used, remote
	h := machines.Hello{Time: used, MAC: machines.MAC(req.MAC), IP: remote, AgentVersion: req.AgentVersion, Uptime: req.Uptime}
	var sess machines.Session
	var plain string
	if rec.MachineID != "" {
		var err error
		if plain, err = newSecret(); err != nil {
			return machines.Machine{}, "", err
		}
		sess = machines.Session{Hash: hashToken(plain), MachineID: rec.MachineID, MAC: machines.MAC(req.MAC), Addr: remote, Issued: used, Expires: used.Add(SessionTTL)}
	}
	if err := inv.st.Hello(rec, sess, h); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return machines.Machine{}, "", ErrUnknownMachine
		}
		return machines.Machine{}, "", err
	}
	t.rec, t.persisted = rec, true
	if rec.MachineID == "" { // a discovery boot of an unknown MAC
		inv.Event(machines.Event{Machine: "unknown-" + req.MAC.String(), Kind: "hello", Message: "agent hello from an unknown machine (discovery)", Fields: map[string]string{"ip": remote.String()}})
		return machines.Machine{MACs: []machines.MAC{machines.MAC(req.MAC)}, LastHello: &h}, "", nil
	}
	for k, s := range inv.sessions {
		if s.MachineID == rec.MachineID {
			delete(inv.sessions, k)
		}
	}
	inv.sessions[sess.Hash] = sess
	// The event first: whoever sees the machine's new hello finds it on the timeline too.
	inv.Event(machines.Event{Machine: rec.MachineID, Kind: "hello", Message: "agent hello: the agent runs on the machine",
		Fields: map[string]string{"mac": req.MAC.String(), "ip": remote.String(), "agent_version": req.AgentVersion}})
	inv.mu.Lock()
	m := inv.byID[rec.MachineID]
	m.LastHello = &h
	inv.byID[rec.MachineID] = m
	inv.byAddr[remote] = m.ID
	inv.mu.Unlock()
	return m, plain, nil
}

// Authorize checks an agent request after the hello: the session token, the MAC it claims and
// the address it comes from must be the session's, and the session the machine's newest.
func (inv *Inventory) Authorize(mac net.HardwareAddr, session string, remote netip.Addr) (machines.Session, error) {
	hash := hashToken(session)
	inv.tokMu.Lock()
	s, ok := inv.sessions[hash]
	if !ok {
		var err error
		if s, err = inv.st.Session(hash); err == nil {
			inv.sessions[hash] = s
			ok = true
		}
	}
	inv.tokMu.Unlock()
	switch {
	case !ok || inv.now().After(s.Expires) || subtle.ConstantTimeCompare(s.MAC, mac) != 1:
		return machines.Session{}, ErrBadToken
	case s.Addr != remote.Unmap():
		return machines.Session{}, fmt.Errorf("%w: the session of %s belongs to %s", ErrWrongAddress, s.MachineID, s.Addr)
	}
	return s, nil
}
