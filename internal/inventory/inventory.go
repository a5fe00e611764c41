// Package inventory is the daemon's view of its machines: an in-memory index of the stored
// inventory by MAC and by address, the agents' boot tokens and sessions, their hellos, plans
// and results, unknown clients and each machine's timeline.
//
// What anonymous hosts on the blade network can cause costs the daemon nothing durable unless a
// job waits for it: boot tokens live in memory (stored only for a job's netboot), boot events
// (DHCP, TFTP, scripts, assets) are coalesced and kept in memory (stored in the machine's boot
// log only while a job runs), and the audit log of operator actions, jobs, hellos and results
// is apart from the boot log, so boot chatter never evicts it.
//
// It is a hub: cmd/imaged and internal/api import it; it adapts the store to the small
// interfaces that the protocol packages (dhcp, tftp, ipxe) declare, so they stay leaves. It
// keeps its records through Store, which it declares and *store.Store implements: it does not
// link the store.
package inventory

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/machines"
)

// Config tunes the inventory.
type Config struct {
	Log      *slog.Logger
	TokenTTL time.Duration // how long a boot token is good for (boot.token_ttl)
	// BindToLease says imaged is the DHCP server: a boot token is issued only to the address
	// imaged leased to the MAC, and only a hello from that address may use it.
	BindToLease bool
}

// Store is what the inventory keeps in the state file; *store.Store implements it. A record that
// does not exist is an error matching fs.ErrNotExist.
type Store interface {
	Machines() ([]machines.Machine, error)
	Machine(id string) (machines.Machine, error)
	AssignImage(id string, digest images.Digest, channel string) error
	SetCurrentImage(id string, digest images.Digest) error
	ResolveImage(ref images.Ref) (images.Image, error)
	ChannelDigests() (map[string]images.Digest, error) // name@channel → the digest it points at

	Leases() ([]machines.Lease, error)
	RecordUnknown(seen []machines.Unknown) error
	Unknowns() ([]machines.Unknown, error)

	PutToken(machines.BootToken) error
	Token(hash string) (machines.BootToken, error)
	Session(hash string) (machines.Session, error)
	// Hello records in one transaction the token a hello consumed, the session it opened (none
	// for an unknown machine: MachineID "") and the hello on the machine.
	Hello(machines.BootToken, machines.Session, machines.Hello) error

	AddEvent(machines.Event) (machines.Event, error)
	Events(machine string, after uint64) ([]machines.Event, error)
	LastSeq(machine string) (uint64, error)
}

// Inventory indexes the stored machines. It is safe for concurrent use.
type Inventory struct {
	st  Store
	log *slog.Logger
	cfg Config
	now func() time.Time

	mu       sync.RWMutex
	byID     map[string]machines.Machine
	byMAC    map[string]string // mac → id
	byAddr   map[netip.Addr]string
	leases   map[string]netip.Addr        // mac → the address imaged's DHCP acknowledged
	unknown  map[string]*machines.Unknown // sightings not yet flushed, at most MaxPendingUnknown
	dropped  int64                        // sightings of new MACs not kept because unknown was full
	progress map[string]Progress          // latest write progress by machine

	tokMu    sync.Mutex
	tokens   map[string]*bootToken       // by hash: boot tokens issued and not expired
	latest   map[string]string           // machine id, or "unknown-"+mac → hash of its newest boot token
	sessions map[string]machines.Session // by hash: a cache of the stored sessions

	evMu    sync.Mutex
	lastSeq map[string]uint64      // machine → its last event's sequence number
	bootLog map[string][]bootEvent // machine → its newest boot events, oldest first

	subMu  sync.Mutex
	subs   map[chan machines.Event]struct{}
	missed int64 // events not delivered to a subscriber that fell behind
}

// New loads the stored inventory and its DHCP leases.
func New(st Store, cfg Config) (*Inventory, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.TokenTTL <= 0 {
		return nil, errors.New("inventory: the boot token lifetime must be positive")
	}
	inv := &Inventory{st: st, log: cfg.Log, cfg: cfg, now: time.Now, unknown: map[string]*machines.Unknown{},
		leases: map[string]netip.Addr{}, tokens: map[string]*bootToken{}, latest: map[string]string{},
		sessions: map[string]machines.Session{}, lastSeq: map[string]uint64{}, bootLog: map[string][]bootEvent{}}
	if err := inv.Reload(); err != nil {
		return nil, err
	}
	ls, err := st.Leases()
	if err != nil {
		return nil, fmt.Errorf("inventory: leases: %w", err)
	}
	now := inv.now()
	for _, l := range ls {
		if len(l.MAC) > 0 && l.Addr.IsValid() && l.Expiry.After(now) {
			inv.leases[l.MAC.String()] = l.Addr.Unmap()
		}
	}
	return inv, nil
}

// Reload rebuilds the index from the store.
func (inv *Inventory) Reload() error {
	ms, err := inv.st.Machines()
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	byID, byMAC, byAddr := map[string]machines.Machine{}, map[string]string{}, map[netip.Addr]string{}
	for _, m := range ms {
		byID[m.ID] = m
		for _, mac := range m.MACs {
			byMAC[mac.String()] = m.ID
		}
		if m.IP.IsValid() {
			byAddr[m.IP] = m.ID
		}
	}
	inv.mu.Lock()
	inv.byID, inv.byMAC, inv.byAddr = byID, byMAC, byAddr
	inv.mu.Unlock()
	return nil
}

// ByMAC returns the machine that owns mac.
func (inv *Inventory) ByMAC(mac net.HardwareAddr) (machines.Machine, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	id, ok := inv.byMAC[mac.String()]
	if !ok {
		return machines.Machine{}, false
	}
	return inv.byID[id], true
}

// ByAddr returns the machine that holds addr (reserved, leased or seen in a hello).
func (inv *Inventory) ByAddr(addr netip.Addr) (machines.Machine, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	id, ok := inv.byAddr[addr.Unmap()]
	if !ok {
		return machines.Machine{}, false
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

// NoteLease records that imaged's DHCP server acknowledged addr for mac (an ACK, not an offer):
// with Config.BindToLease, the machine's boot tokens are bound to it.
func (inv *Inventory) NoteLease(mac net.HardwareAddr, addr netip.Addr) {
	if !addr.IsValid() {
		return
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.leases[mac.String()] = addr.Unmap()
	if id, ok := inv.byMAC[mac.String()]; ok {
		inv.byAddr[addr.Unmap()] = id
	}
}

// Machines returns every machine, sorted by id.
func (inv *Inventory) Machines() []machines.Machine {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	out := make([]machines.Machine, 0, len(inv.byID))
	for _, m := range inv.byID {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Machine returns one machine by id.
func (inv *Inventory) Machine(id string) (machines.Machine, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	m, ok := inv.byID[id]
	return m, ok
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
		u = &machines.Unknown{MAC: machines.MAC(mac), FirstSeen: now}
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
	batch := make([]machines.Unknown, 0, len(inv.unknown))
	for _, u := range inv.unknown {
		batch = append(batch, *u)
	}
	inv.unknown = map[string]*machines.Unknown{}
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

// Unknowns lists the clients seen that are not in the inventory, as stored (FlushUnknown).
func (inv *Inventory) Unknowns() ([]machines.Unknown, error) { return inv.st.Unknowns() }
