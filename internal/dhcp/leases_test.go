package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestTableExpiry walks the lease table through time: offers are held for offerHold, leases
// for LeaseTime, declined addresses for DeclineHold; then each address is free again.
func TestTableExpiry(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg, err := Config{Mode: ModeServer, Interface: "x", ServerIP: netip.MustParseAddr("10.0.0.1"),
		Subnet:    netip.MustParsePrefix("10.0.0.0/24"),
		PoolStart: netip.MustParseAddr("10.0.0.10"), PoolEnd: netip.MustParseAddr("10.0.0.11"),
		LeaseTime: time.Hour, DeclineHold: 10 * time.Minute}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	tb := newTable(cfg)
	a, b, c := mustMAC(t, "02:00:00:00:00:0a"), mustMAC(t, "02:00:00:00:00:0b"), mustMAC(t, "02:00:00:00:00:0c")
	none := netip.Addr{}

	addrA, err := tb.offer(a, none, none, t0)
	if err != nil {
		t.Fatal(err)
	}
	addrB, err := tb.offer(b, none, none, t0)
	if err != nil || addrB == addrA {
		t.Fatalf("B offered %v (%v), want the other pool address", addrB, err)
	}
	if _, err := tb.offer(c, none, none, t0.Add(offerHold-time.Second)); !errors.Is(err, errPoolExhausted) {
		t.Fatalf("C during the offer hold: %v, want errPoolExhausted", err)
	}
	// A takes its offer; B's offer lapses and C gets B's address.
	if _, ok := tb.commit(a, addrA, none, "", t0.Add(time.Second)); !ok {
		t.Fatal("A could not take its offer")
	}
	if got, err := tb.offer(c, none, none, t0.Add(offerHold+time.Second)); err != nil || got != addrB {
		t.Fatalf("C after B's offer lapsed: %v (%v), want %v", got, err, addrB)
	}
	// B asks for A's address: A holds it, so NAK.
	if _, ok := tb.commit(b, addrA, none, "", t0.Add(2*time.Minute)); ok {
		t.Fatal("B was given A's bound address")
	}
	// A's lease ends after an hour: B may then have it.
	if _, ok := tb.commit(b, addrA, none, "", t0.Add(time.Hour+2*time.Second)); !ok {
		t.Fatal("B could not take A's expired address")
	}
	// B declines it: nobody gets it for DeclineHold.
	tNow := t0.Add(2 * time.Hour)
	if _, ok := tb.decline(b, addrA, tNow); !ok {
		t.Fatal("decline of a held address refused")
	}
	if _, ok := tb.commit(a, addrA, none, "", tNow.Add(9*time.Minute)); ok {
		t.Fatal("declined address given out during the hold")
	}
	if _, ok := tb.commit(a, addrA, none, "", tNow.Add(11*time.Minute)); !ok {
		t.Fatal("declined address still held after DeclineHold")
	}
	// Never handed out: the server's own address, even as a reservation.
	if _, err := tb.offer(c, cfg.ServerIP, none, tNow); !errors.Is(err, errReservedInUse) {
		t.Fatalf("reservation of the server's address: %v, want errReservedInUse", err)
	}
}

func TestThrottle(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	th := newThrottle(5*time.Minute, 3, 4)
	steps := []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 0, true},
		{"a", 30 * time.Second, false}, // once per 5 minutes per key
		{"b", 30 * time.Second, true},
		{"c", 30 * time.Second, true},
		{"d", 30 * time.Second, true},  // 4th this minute; the map is full of recent keys: cleared
		{"e", 30 * time.Second, false}, // 5th this minute: over budget
		{"a", 6 * time.Minute, true},   // a new minute, and a's 5 minutes are over
		{"a", 6*time.Minute + 1, false},
		{"f", 6*time.Minute + 2, true},
		{"g", 12*time.Minute + 3, true}, // map full of old keys: they are dropped
		{"f", 12*time.Minute + 4, true}, // 6 minutes after f
		{"f", 12*time.Minute + 5, false},
		{"h", 12*time.Minute + 6, true},
		{"i", 12*time.Minute + 7, true},  // 4th in this minute
		{"j", 12*time.Minute + 8, false}, // budget spent
		{"j", 13*time.Minute + 9, true},  // next minute
		{"k", 13*time.Minute + 10, true},
		{"l", 13*time.Minute + 11, true},
	}
	for i, s := range steps {
		if got := th.allow(s.key, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: allow(%q, +%v) = %v, want %v", i, s.key, s.at, got, s.want)
		}
		if len(th.seen) > 3 {
			t.Fatalf("step %d: throttle remembers %d keys, more than its bound 3", i, len(th.seen))
		}
	}
}

// TestPoolGauges: the pool's size leaves out the addresses never handed out (here the server's
// and the router's, both inside the range), and free counts down as clients take addresses, to
// 0 when the pool is exhausted; a reservation outside the pool changes neither.
func TestPoolGauges(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg, err := Config{Mode: ModeServer, Interface: "x", ServerIP: netip.MustParseAddr("10.0.0.10"),
		Router: netip.MustParseAddr("10.0.0.11"), Subnet: netip.MustParsePrefix("10.0.0.0/24"),
		PoolStart: netip.MustParseAddr("10.0.0.10"), PoolEnd: netip.MustParseAddr("10.0.0.14"),
		LeaseTime: time.Hour}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	tb := newTable(cfg)
	reg := prometheus.NewRegistry()
	reg.MustRegister(&poolCollector{t: tb, now: func() time.Time { return t0 }})
	check := func(when string, size, free int) {
		t.Helper()
		want := fmt.Sprintf(`# HELP imaged_dhcp_pool_addresses %s
# TYPE imaged_dhcp_pool_addresses gauge
imaged_dhcp_pool_addresses %d
# HELP imaged_dhcp_pool_free_addresses Free addresses in the dynamic pool.
# TYPE imaged_dhcp_pool_free_addresses gauge
imaged_dhcp_pool_free_addresses %d
`, poolSizeHelp, size, free)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "imaged_dhcp_pool_addresses", "imaged_dhcp_pool_free_addresses"); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
	none := netip.Addr{}
	check("empty", 3, 3)
	if _, err := tb.offer(mustMAC(t, "02:00:00:00:00:01"), netip.MustParseAddr("10.0.0.50"), none, t0); err != nil {
		t.Fatal(err)
	}
	check("a reservation outside the pool", 3, 3)
	for i := 2; i <= 4; i++ {
		if _, err := tb.offer(mustMAC(t, fmt.Sprintf("02:00:00:00:00:%02x", i)), none, none, t0); err != nil {
			t.Fatal(err)
		}
	}
	check("three offers", 3, 0)
	if _, err := tb.offer(mustMAC(t, "02:00:00:00:00:05"), none, none, t0); !errors.Is(err, errPoolExhausted) {
		t.Fatalf("a fourth client: %v, want errPoolExhausted", err)
	}
}
