package inventory

import (
	"maps"
	"sort"
	"time"

	"github.com/imaged/imaged/internal/machines"
)

// BootMemory is how many boot events per machine the daemon keeps in memory.
const BootMemory = 256

// coalesceWindow is how many of a machine's newest boot events a repeat is looked for among: a
// client alternating a few requests is coalesced too.
const coalesceWindow = 8

// bootEvent is a boot event in memory, and whether the boot log holds it.
type bootEvent struct {
	machines.Event
	stored bool
}

// nextSeqLocked numbers the next event of machine (see machines.NextSeq).
func (inv *Inventory) nextSeqLocked(machine string, now time.Time) uint64 {
	last, ok := inv.lastSeq[machine]
	if !ok {
		last, _ = inv.st.LastSeq(machine)
	}
	seq := machines.NextSeq(last, now)
	inv.lastSeq[machine] = seq
	return seq
}

// Event appends to a machine's audit log (or its boot log, for a boot kind). A failure to store
// it is logged, never fatal.
func (inv *Inventory) Event(e machines.Event) {
	if e.Time.IsZero() {
		e.Time = inv.now().UTC()
	}
	inv.evMu.Lock()
	e.Seq = inv.nextSeqLocked(e.Machine, e.Time)
	inv.evMu.Unlock()
	// Written outside the lock, so that concurrent events share a commit (the store batches).
	if _, err := inv.st.AddEvent(e); err != nil {
		inv.log.Warn("cannot record event", "machine", e.Machine, "kind", e.Kind, "err", err)
	}
	inv.publish(e)
}

// BootEvent records what a host on the blade network caused (a DHCP exchange, a TFTP transfer,
// a boot script or asset served) on a machine's timeline. A repeat of one of the machine's
// newest boot events (same kind and fields) is coalesced into it: its count goes up and its
// message and time of last repeat are the latest. Boot events are kept in memory
// (BootMemory per machine); persist stores them in the machine's boot log too, for a machine
// that a job waits for.
func (inv *Inventory) BootEvent(e machines.Event, persist bool) {
	if e.Time.IsZero() {
		e.Time = inv.now().UTC()
	}
	inv.evMu.Lock()
	log := inv.bootLog[e.Machine]
	for i := len(log) - 1; i >= max(0, len(log)-coalesceWindow); i-- {
		p := &log[i]
		if p.Kind != e.Kind || !maps.Equal(p.Fields, e.Fields) {
			continue
		}
		p.Count = max(p.Count, 1) + 1
		t := e.Time
		p.Last, p.Message = &t, e.Message
		if persist {
			if _, err := inv.st.AddEvent(p.Event); err != nil {
				inv.log.Warn("cannot record event", "machine", e.Machine, "kind", e.Kind, "err", err)
			} else {
				p.stored = true
			}
		}
		inv.evMu.Unlock()
		return
	}
	e.Seq = inv.nextSeqLocked(e.Machine, e.Time)
	be := bootEvent{Event: e}
	if persist {
		if _, err := inv.st.AddEvent(e); err != nil {
			inv.log.Warn("cannot record event", "machine", e.Machine, "kind", e.Kind, "err", err)
		} else {
			be.stored = true
		}
	}
	if len(log) >= BootMemory {
		log = append(log[:0], log[len(log)-BootMemory+1:]...)
	}
	inv.bootLog[e.Machine] = append(log, be)
	inv.evMu.Unlock()
	inv.publish(e)
}

// Events returns a machine's timeline after sequence number after: its stored audit and boot
// logs and the boot events kept in memory, oldest first.
func (inv *Inventory) Events(id string, after uint64) ([]machines.Event, error) {
	stored, err := inv.st.Events(id, after)
	if err != nil {
		return nil, err
	}
	inv.evMu.Lock()
	mem := make([]machines.Event, 0, len(inv.bootLog[id]))
	for _, e := range inv.bootLog[id] {
		if e.Seq > after {
			mem = append(mem, e.Event)
		}
	}
	inv.evMu.Unlock()
	if len(mem) == 0 {
		return stored, nil
	}
	bySeq := make(map[uint64]machines.Event, len(stored)+len(mem))
	for _, e := range stored {
		bySeq[e.Seq] = e
	}
	for _, e := range mem { // the memory copy of a stored boot event may have newer repeats
		bySeq[e.Seq] = e
	}
	out := make([]machines.Event, 0, len(bySeq))
	for _, e := range bySeq {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// SubscriberBuffer is how many events a subscriber may fall behind before it misses some.
const SubscriberBuffer = 256

// Subscribe returns every event recorded from now on, until cancel is called. A subscriber that
// falls more than SubscriberBuffer events behind misses the newest ones (counted in
// MissedEvents) rather than slowing the daemon down. Coalesced repeats are not sent again.
func (inv *Inventory) Subscribe() (events <-chan machines.Event, cancel func()) {
	ch := make(chan machines.Event, SubscriberBuffer)
	inv.subMu.Lock()
	if inv.subs == nil {
		inv.subs = map[chan machines.Event]struct{}{}
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

func (inv *Inventory) publish(e machines.Event) {
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
