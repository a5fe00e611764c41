package dhcp

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Errors of the lease table, for logs.
var (
	errPoolExhausted    = errors.New("no free address in the pool")
	errNoPool           = errors.New("no reservation and no dynamic pool")
	errReservedInUse    = errors.New("reserved address is leased to another MAC")
	errReservedDeclined = errors.New("reserved address was declined (in use on the network)")
)

const stateOffered = "offered"

// entry is one client's address in the table.
type entry struct {
	mac      net.HardwareAddr
	addr     netip.Addr
	expiry   time.Time
	state    string // stateOffered or LeaseBound
	hostname string
}

// table is the in-memory lease state of server mode; the LeaseStore is its durable copy. All
// decisions are taken under mu; the store is written by the caller after mu is released, so
// that concurrent writes reach the store together and it can batch them.
type table struct {
	mu                     sync.Mutex
	subnet                 netip.Prefix
	lo, hi                 uint32 // the pool, inclusive; hi < lo: no pool
	next                   uint32 // where the next free-address scan starts
	never                  map[netip.Addr]bool
	byMAC                  map[string]*entry
	byAddr                 map[netip.Addr]*entry
	declined               map[netip.Addr]time.Time
	leaseTime, declineHold time.Duration
}

func newTable(c Config) *table {
	t := &table{
		subnet:      c.Subnet,
		lo:          1,
		hi:          0,
		byMAC:       map[string]*entry{},
		byAddr:      map[netip.Addr]*entry{},
		declined:    map[netip.Addr]time.Time{},
		leaseTime:   c.LeaseTime,
		declineHold: c.DeclineHold,
	}
	if c.PoolStart.IsValid() {
		t.lo, t.hi = u32(c.PoolStart), u32(c.PoolEnd)
		t.next = t.lo
	}
	// Addresses never handed out: ours, the router's, the subnet's network and broadcast.
	netw := u32(c.Subnet.Addr())
	bcast := netw | (1<<(32-c.Subnet.Bits()) - 1)
	t.never = map[netip.Addr]bool{c.ServerIP: true, addrFrom32(netw): true, addrFrom32(bcast): true}
	if c.Router.IsValid() {
		t.never[c.Router] = true
	}
	return t
}

// load fills the table from persisted leases. When two leases claim one address (a stale
// record of a client whose address was reused after it expired), the later expiry wins.
func (t *table) load(ls []Lease, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range ls {
		if !t.subnet.Contains(l.Addr) || len(l.MAC) == 0 {
			continue
		}
		switch l.State {
		case LeaseDeclined:
			if l.Expiry.After(now) && l.Expiry.After(t.declined[l.Addr]) {
				t.declined[l.Addr] = l.Expiry
			}
		case LeaseBound:
			if old := t.byAddr[l.Addr]; old != nil && !l.Expiry.After(old.expiry) {
				continue
			}
			t.set(&entry{mac: l.MAC, addr: l.Addr, expiry: l.Expiry, state: LeaseBound, hostname: l.Hostname})
		}
	}
}

// set records e, dropping whatever e's MAC or address was tied to before.
func (t *table) set(e *entry) {
	if old := t.byMAC[string(e.mac)]; old != nil && t.byAddr[old.addr] == old {
		delete(t.byAddr, old.addr)
	}
	if old := t.byAddr[e.addr]; old != nil && t.byMAC[string(old.mac)] == old {
		delete(t.byMAC, string(old.mac))
	}
	t.byMAC[string(e.mac)] = e
	t.byAddr[e.addr] = e
}

func (t *table) inPool(a netip.Addr) bool {
	v := u32(a)
	return a.Is4() && t.lo <= v && v <= t.hi
}

// usable reports whether mac may have a: in the subnet, not ours, not declined, and free or
// already mac's.
func (t *table) usable(a netip.Addr, mac net.HardwareAddr, now time.Time) bool {
	if !t.subnet.Contains(a) || t.never[a] {
		return false
	}
	if until, ok := t.declined[a]; ok {
		if until.After(now) {
			return false
		}
		delete(t.declined, a)
	}
	e := t.byAddr[a]
	return e == nil || string(e.mac) == string(mac) || !e.expiry.After(now)
}

// offer picks an address for mac (RFC 2131 §4.3.1): its reservation; else the address it
// had, if still free; else the one it asks for (option 50), if free; else the next free one in
// the pool. The address is set aside for offerHold.
func (t *table) offer(mac net.HardwareAddr, reserved, requested netip.Addr, now time.Time) (netip.Addr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, err := t.pick(mac, reserved, requested, now)
	if err != nil {
		return netip.Addr{}, err
	}
	if e := t.byMAC[string(mac)]; e != nil && e.addr == a && e.state == LeaseBound && e.expiry.After(now) {
		return a, nil // already bound to it: keep the lease as it is
	}
	t.set(&entry{mac: mac, addr: a, expiry: now.Add(offerHold), state: stateOffered})
	return a, nil
}

func (t *table) pick(mac net.HardwareAddr, reserved, requested netip.Addr, now time.Time) (netip.Addr, error) {
	if reserved.IsValid() {
		if until, ok := t.declined[reserved]; ok && until.After(now) {
			return netip.Addr{}, errReservedDeclined
		}
		if !t.usable(reserved, mac, now) {
			return netip.Addr{}, errReservedInUse
		}
		return reserved, nil
	}
	if t.hi < t.lo {
		return netip.Addr{}, errNoPool
	}
	if e := t.byMAC[string(mac)]; e != nil && t.inPool(e.addr) && t.usable(e.addr, mac, now) {
		return e.addr, nil
	}
	if requested.IsValid() && t.inPool(requested) && t.usable(requested, mac, now) {
		return requested, nil
	}
	size := t.hi - t.lo + 1
	for i := uint32(0); i < size; i++ {
		v := t.next
		t.next++
		if t.next > t.hi || t.next < t.lo {
			t.next = t.lo
		}
		if a := addrFrom32(v); t.usable(a, mac, now) {
			return a, nil
		}
	}
	return netip.Addr{}, errPoolExhausted
}

// commit binds a to mac for leaseTime if mac may have it (RFC 2131 §4.3.2): a is its
// reservation, or (without one) a free pool address or the one it already holds. It returns
// the lease to persist, or ok=false: the server then answers DHCPNAK.
func (t *table) commit(mac net.HardwareAddr, a, reserved netip.Addr, hostname string, now time.Time) (Lease, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if reserved.IsValid() {
		if a != reserved {
			return Lease{}, false
		}
	} else if !t.inPool(a) {
		return Lease{}, false
	}
	if !t.usable(a, mac, now) {
		return Lease{}, false
	}
	e := &entry{mac: mac, addr: a, expiry: now.Add(t.leaseTime), state: LeaseBound, hostname: hostname}
	t.set(e)
	return Lease{MAC: mac, Addr: a, Expiry: e.expiry, Hostname: hostname, State: LeaseBound}, true
}

// holds reports whether mac holds a (offered or bound, not expired).
func (t *table) holds(mac net.HardwareAddr, a netip.Addr, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byMAC[string(mac)]
	return e != nil && e.addr == a && e.expiry.After(now)
}

// forget drops an offer to mac that it turned down by choosing another server.
func (t *table) forget(mac net.HardwareAddr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byMAC[string(mac)]; e != nil && e.state == stateOffered {
		t.drop(e)
	}
}

func (t *table) drop(e *entry) {
	if t.byMAC[string(e.mac)] == e {
		delete(t.byMAC, string(e.mac))
	}
	if t.byAddr[e.addr] == e {
		delete(t.byAddr, e.addr)
	}
}

// release frees mac's lease on a (RFC 2131 §4.3.4) and reports whether there was one.
func (t *table) release(mac net.HardwareAddr, a netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byMAC[string(mac)]
	if e == nil || e.addr != a {
		return false
	}
	t.drop(e)
	return true
}

// decline marks a unusable for declineHold (RFC 2131 §4.3.3: "the server MUST mark the network
// address as not available") if mac held it, and returns the record to persist.
func (t *table) decline(mac net.HardwareAddr, a netip.Addr, now time.Time) (Lease, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byMAC[string(mac)]
	if e == nil || e.addr != a {
		return Lease{}, false
	}
	t.drop(e)
	until := now.Add(t.declineHold)
	t.declined[a] = until
	return Lease{MAC: mac, Addr: a, Expiry: until, State: LeaseDeclined}, true
}

// poolStats counts the table for the lease gauges. size is how many addresses of the dynamic
// pool may be leased at all (the range without the addresses that are never handed out); free
// is how many of them nobody holds.
type poolStats struct {
	bound, offered, declined, size, free int
}

func (t *table) stats(now time.Time) poolStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	var s poolStats
	usedInPool := 0
	for a, e := range t.byAddr {
		if !e.expiry.After(now) {
			continue
		}
		if e.state == LeaseBound {
			s.bound++
		} else {
			s.offered++
		}
		if t.inPool(a) && !t.never[a] {
			usedInPool++
		}
	}
	for a, until := range t.declined {
		if until.After(now) {
			s.declined++
			if t.inPool(a) && !t.never[a] {
				usedInPool++
			}
		}
	}
	if t.hi >= t.lo {
		s.size = int(t.hi - t.lo + 1)
		for a := range t.never {
			if t.inPool(a) {
				s.size--
			}
		}
		s.free = max(0, s.size-usedInPool)
	}
	return s
}
