// Package inventory is the daemon's view of its machines: an in-memory index of the stored
// inventory by MAC and by address, the per-boot tokens, agent hellos, unknown clients and each
// machine's timeline of boot events.
//
// It is a hub: cmd/imaged and internal/api import it; it adapts the store to the small
// interfaces that the protocol packages (dhcp, tftp, boot) declare, so they stay leaves.
package inventory

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/imaged/imaged/internal/store"
)

// Errors of Hello.
var (
	ErrBadToken       = errors.New("boot token not valid for this MAC (unknown, expired, or issued to another machine)")
	ErrUnknownMachine = errors.New("machine not in the inventory")
)

// Inventory indexes the stored machines. It is safe for concurrent use.
type Inventory struct {
	st       *store.Store
	log      *slog.Logger
	tokenTTL time.Duration
	now      func() time.Time

	mu       sync.RWMutex
	byID     map[string]store.Machine
	byMAC    map[string]string // mac → id
	byAddr   map[netip.Addr]string
	unknown  map[string]*store.Unknown // sightings not yet flushed, at most MaxPendingUnknown
	dropped  int64                     // sightings of new MACs not kept because unknown was full
	progress map[string]Progress       // latest write progress by machine

	subMu  sync.Mutex
	subs   map[chan store.Event]struct{}
	missed int64 // events not delivered to a subscriber that fell behind
}

// New loads the stored inventory.
func New(st *store.Store, log *slog.Logger, tokenTTL time.Duration) (*Inventory, error) {
	inv := &Inventory{st: st, log: log, tokenTTL: tokenTTL, now: time.Now, unknown: map[string]*store.Unknown{}}
	if err := inv.Reload(); err != nil {
		return nil, err
	}
	return inv, nil
}

// Reload rebuilds the index from the store.
func (inv *Inventory) Reload() error {
	ms, err := inv.st.Machines()
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	byID, byMAC, byAddr := map[string]store.Machine{}, map[string]string{}, map[netip.Addr]string{}
	for _, m := range ms {
		byID[m.ID] = m
		for _, mac := range m.MACs {
			byMAC[mac] = m.ID
		}
		if a, err := netip.ParseAddr(m.IP); err == nil {
			byAddr[a] = m.ID
		}
	}
	inv.mu.Lock()
	inv.byID, inv.byMAC, inv.byAddr = byID, byMAC, byAddr
	inv.mu.Unlock()
	return nil
}

// ByMAC returns the machine that owns mac.
func (inv *Inventory) ByMAC(mac net.HardwareAddr) (store.Machine, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	id, ok := inv.byMAC[mac.String()]
	if !ok {
		return store.Machine{}, false
	}
	return inv.byID[id], true
}

// ByAddr returns the machine that holds addr (reserved, leased or seen in a hello).
func (inv *Inventory) ByAddr(addr netip.Addr) (store.Machine, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	id, ok := inv.byAddr[addr.Unmap()]
	if !ok {
		return store.Machine{}, false
	}
	return inv.byID[id], true
}

// NoteAddr records that the machine owning mac now uses addr (a lease), so later requests from
// that address (TFTP, HTTP) are attributed to it.
func (inv *Inventory) NoteAddr(mac net.HardwareAddr, addr netip.Addr) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if id, ok := inv.byMAC[mac.String()]; ok && addr.IsValid() {
		inv.byAddr[addr.Unmap()] = id
	}
}

// Machines returns every machine, sorted by id.
func (inv *Inventory) Machines() []store.Machine {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	out := make([]store.Machine, 0, len(inv.byID))
	for _, m := range inv.byID {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Machine returns one machine by id.
func (inv *Inventory) Machine(id string) (store.Machine, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	m, ok := inv.byID[id]
	return m, ok
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// IssueToken makes a fresh random token for one netboot of machine id on mac. Only its hash is
// stored.
func (inv *Inventory) IssueToken(id string, mac net.HardwareAddr, profile string) (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b)
	now := inv.now()
	err := inv.st.PutToken(store.BootToken{Hash: hashToken(tok), MachineID: id, MAC: mac.String(),
		Profile: profile, Issued: now, Expires: now.Add(inv.tokenTTL)})
	if err != nil {
		return "", fmt.Errorf("inventory: store token: %w", err)
	}
	return tok, nil
}

// HelloRequest is what an agent sends when it comes up.
type HelloRequest struct {
	MAC          net.HardwareAddr
	Token        string
	IP           string
	AgentVersion string
	Uptime       float64
}

// Authorize checks an agent's token against the MAC it claims and returns the token's record.
func (inv *Inventory) Authorize(mac net.HardwareAddr, token string) (store.BootToken, error) {
	rec, err := inv.st.Token(hashToken(token))
	if err != nil || inv.now().After(rec.Expires) ||
		subtle.ConstantTimeCompare([]byte(rec.MAC), []byte(mac.String())) != 1 {
		return store.BootToken{}, ErrBadToken
	}
	return rec, nil
}

// Hello checks an agent's token against the MAC it claims and records the hello on the machine.
func (inv *Inventory) Hello(req HelloRequest) (store.Machine, error) {
	rec, err := inv.Authorize(req.MAC, req.Token)
	if err != nil {
		return store.Machine{}, err
	}
	h := store.Hello{Time: inv.now().UTC(), MAC: req.MAC.String(), IP: req.IP, AgentVersion: req.AgentVersion, Uptime: req.Uptime}
	if rec.MachineID == "" { // a discovery boot of an unknown MAC
		inv.Event(store.Event{Machine: "unknown-" + req.MAC.String(), Kind: "hello", Message: "agent hello from an unknown machine (discovery)", Fields: map[string]string{"ip": req.IP}})
		return store.Machine{MACs: []string{req.MAC.String()}, LastHello: &h}, nil
	}
	if err := inv.st.RecordHello(rec.MachineID, h); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Machine{}, ErrUnknownMachine
		}
		return store.Machine{}, err
	}
	inv.mu.Lock()
	m := inv.byID[rec.MachineID]
	m.LastHello = &h
	inv.byID[rec.MachineID] = m
	if a, err := netip.ParseAddr(req.IP); err == nil {
		inv.byAddr[a] = m.ID
	}
	inv.mu.Unlock()
	inv.Event(store.Event{Machine: m.ID, Kind: "hello", Message: "agent hello: the agent runs on the machine",
		Fields: map[string]string{"mac": req.MAC.String(), "ip": req.IP, "agent_version": req.AgentVersion}})
	return m, nil
}

// Event appends to a machine's timeline. A failure to store it is logged, never fatal.
func (inv *Inventory) Event(e store.Event) {
	if e.Time.IsZero() {
		e.Time = inv.now().UTC()
	}
	if err := inv.st.AddEvent(e); err != nil {
		inv.log.Warn("cannot record event", "machine", e.Machine, "kind", e.Kind, "err", err)
	}
	inv.publish(e)
}

// SubscriberBuffer is how many events a subscriber may fall behind before it misses some.
const SubscriberBuffer = 256

// Subscribe returns every event recorded from now on, until cancel is called. A subscriber that
// falls more than SubscriberBuffer events behind misses the newest ones (counted in
// MissedEvents) rather than slowing the daemon down.
func (inv *Inventory) Subscribe() (events <-chan store.Event, cancel func()) {
	ch := make(chan store.Event, SubscriberBuffer)
	inv.subMu.Lock()
	if inv.subs == nil {
		inv.subs = map[chan store.Event]struct{}{}
	}
	inv.subs[ch] = struct{}{}
	inv.subMu.Unlock()
	return ch, func() {
		inv.subMu.Lock()
		delete(inv.subs, ch)
		inv.subMu.Unlock()
	}
}

// MissedEvents counts events that subscribers were too slow to take.
func (inv *Inventory) MissedEvents() int64 {
	inv.subMu.Lock()
	defer inv.subMu.Unlock()
	return inv.missed
}

func (inv *Inventory) publish(e store.Event) {
	inv.subMu.Lock()
	defer inv.subMu.Unlock()
	for ch := range inv.subs {
		select {
		case ch <- e:
		default:
			inv.missed++
		}
	}
}

// Events returns a machine's timeline after sequence number after.
func (inv *Inventory) Events(id string, after uint64) ([]store.Event, error) {
	return inv.st.Events(id, after)
}

// MaxPendingUnknown bounds the distinct unknown MACs kept between flushes, so that a flood of
// random MACs (a misconfigured network, a load generator, an attack) costs bounded memory and a
// bounded write. Sightings of further new MACs are counted, not kept.
const MaxPendingUnknown = 1024

// SawUnknown notes a client that is not in the inventory; FlushUnknown stores the sightings.
func (inv *Inventory) SawUnknown(mac net.HardwareAddr, client string, arch int) {
	now := inv.now().UTC()
	inv.mu.Lock()
	defer inv.mu.Unlock()
	u := inv.unknown[mac.String()]
	if u == nil {
		if len(inv.unknown) >= MaxPendingUnknown {
			inv.dropped++
			return
		}
		u = &store.Unknown{MAC: mac.String(), FirstSeen: now}
		inv.unknown[mac.String()] = u
	}
	u.LastSeen, u.Count = now, u.Count+1
	if client != "" {
		u.Client, u.Arch = client, arch
	}
}

// FlushUnknown writes the pending unknown-client sightings to the store. Sightings are batched
// so that a flood of unknown clients costs one write every few seconds, not one per packet.
func (inv *Inventory) FlushUnknown() error {
	inv.mu.Lock()
	batch := make([]store.Unknown, 0, len(inv.unknown))
	for _, u := range inv.unknown {
		batch = append(batch, *u)
	}
	inv.unknown = map[string]*store.Unknown{}
	dropped := inv.dropped
	inv.dropped = 0
	inv.mu.Unlock()
	if dropped > 0 {
		inv.log.Warn("more unknown clients than can be tracked; their sightings were counted, not listed",
			"not_listed", dropped, "listed_per_flush", MaxPendingUnknown)
	}
	if len(batch) == 0 {
		return nil
	}
	return inv.st.RecordUnknown(batch)
}

// Store returns the underlying store, for read-only listings.
func (inv *Inventory) Store() *store.Store { return inv.st }
