package inventory

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/store"
)

func newTestInventory(t *testing.T, path string, bind bool) (*Inventory, *store.Store) {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.SyncMachines([]machines.Machine{{ID: "m1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}, Boot: "agent"}, {ID: "m2", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:12")}}}); err != nil {
		t.Fatal(err)
	}
	inv, err := New(st, Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour, BindToLease: bind})
	if err != nil {
		t.Fatal(err)
	}
	return inv, st
}

var (
	mac1, _ = net.ParseMAC("52:54:00:99:00:11")
	leased  = netip.MustParseAddr("10.99.0.11")
	other   = netip.MustParseAddr("10.99.0.66")
)

// TestTokenBoundToLease: when imaged is the DHCP server, a boot token goes only to the address
// it leased to the MAC, and only a hello from that address may use it. A host that merely knows
// a machine's MAC gets nothing.
func TestTokenBoundToLease(t *testing.T) {
	inv, _ := newTestInventory(t, filepath.Join(t.TempDir(), "s.db"), true)
	req := TokenRequest{Machine: "m1", MAC: mac1, Profile: "agent", Remote: leased}
	if _, err := inv.IssueToken(req); !errors.Is(err, ErrNotLeased) {
		t.Fatalf("token before any lease: %v", err)
	}
	inv.NoteLease(mac1, leased)
	req.Remote = other
	if _, err := inv.IssueToken(req); !errors.Is(err, ErrWrongAddress) {
		t.Fatalf("token for a script fetched from another address: %v", err)
	}
	req.Remote = leased
	tok, err := inv.IssueToken(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := inv.Hello(HelloRequest{MAC: mac1, Token: tok, Remote: other}); !errors.Is(err, ErrWrongAddress) {
		t.Errorf("hello from another address: %v", err)
	}
	m, sess, err := inv.Hello(HelloRequest{MAC: mac1, Token: tok, Remote: leased})
	if err != nil || m.ID != "m1" || sess == "" {
		t.Fatalf("hello from the lease: %v %q", err, sess)
	}
	if s, err := inv.Authorize(mac1, sess, leased); err != nil || s.MachineID != "m1" {
		t.Errorf("session from the lease: %v", err)
	}
	if _, err := inv.Authorize(mac1, sess, other); !errors.Is(err, ErrWrongAddress) {
		t.Errorf("session from another address: %v", err)
	}
	// The hello's address is the connection's: the machine is found by it, nobody else's.
	if got, ok := inv.ByAddr(leased); !ok || got.ID != "m1" {
		t.Errorf("ByAddr(lease) = %v %v", got.ID, ok)
	}
}

// TestTokenUsedOnce: a hello uses its token up. The same agent asking again at once (a lost
// reply) gets a new session that replaces the first; later, or from elsewhere, it is refused.
func TestTokenUsedOnce(t *testing.T) {
	inv, _ := newTestInventory(t, filepath.Join(t.TempDir(), "s.db"), false)
	now := time.Unix(1800000000, 0)
	inv.now = func() time.Time { return now }
	tok, err := inv.IssueToken(TokenRequest{Machine: "m1", MAC: mac1, Profile: "agent", Remote: leased})
	if err != nil {
		t.Fatal(err)
	}
	_, s1, err := inv.Hello(HelloRequest{MAC: mac1, Token: tok, Remote: leased})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := inv.Hello(HelloRequest{MAC: mac1, Token: tok, Remote: other}); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("the used token from another address: %v", err)
	}
	now = now.Add(10 * time.Second)
	_, s2, err := inv.Hello(HelloRequest{MAC: mac1, Token: tok, Remote: leased})
	if err != nil || s2 == s1 {
		t.Fatalf("the same hello again: %v", err)
	}
	if _, err := inv.Authorize(mac1, s1, leased); err == nil {
		t.Error("the replaced session still works")
	}
	now = now.Add(HelloRetryWindow + time.Second)
	if _, _, err := inv.Hello(HelloRequest{MAC: mac1, Token: tok, Remote: leased}); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("the used token after the retry window: %v", err)
	}
	// Expired tokens and sessions are refused.
	tok2, _ := inv.IssueToken(TokenRequest{Machine: "m1", MAC: mac1, Profile: "agent", Remote: leased})
	now = now.Add(2 * time.Hour)
	if _, _, err := inv.Hello(HelloRequest{MAC: mac1, Token: tok2, Remote: leased}); !errors.Is(err, ErrBadToken) {
		t.Errorf("an expired token: %v", err)
	}
	now = now.Add(SessionTTL)
	if _, err := inv.Authorize(mac1, s2, leased); !errors.Is(err, ErrBadToken) {
		t.Errorf("an expired session: %v", err)
	}
}

// TestTokenCostsNothingUntilAJobWaits: a script fetched again and again during one netboot hands
// out the same token and writes nothing; a token is stored only when a job waits for the
// netboot, and then it survives a restart of the daemon.
func TestTokenCostsNothingUntilAJobWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	inv, st := newTestInventory(t, path, false)
	req := TokenRequest{Machine: "m1", MAC: mac1, Profile: "agent", Remote: leased}
	tok, err := inv.IssueToken(req)
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if again, _ := inv.IssueToken(req); again != tok {
			t.Fatal("a repeated fetch got another token")
		}
	}
	if _, err := st.Token(hashToken(tok)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a token nobody waits for was stored: %v", err)
	}
	if n := len(inv.tokens); n != 1 {
		t.Errorf("%d tokens in memory, want 1", n)
	}
	req.Persist = true
	if again, _ := inv.IssueToken(req); again != tok {
		t.Fatal("the job's fetch got another token")
	}
	if _, err := st.Token(hashToken(tok)); err != nil {
		t.Errorf("the token a job waits for is not stored: %v", err)
	}
	// After a restart, the stored token still makes a hello.
	inv2, err := New(st, Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, sess, err := inv2.Hello(HelloRequest{MAC: mac1, Token: tok, Remote: leased}); err != nil || sess == "" {
		t.Errorf("hello after a restart: %v", err)
	}
	// Discovery tokens (MACs outside the inventory) are bounded.
	for i := range MaxUnknownTokens + 50 {
		mac := net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}
		if _, err := inv.IssueToken(TokenRequest{MAC: mac, Profile: "agent", Remote: other}); err != nil {
			t.Fatal(err)
		}
	}
	unknown := 0
	for _, t := range inv.tokens {
		if t.rec.MachineID == "" {
			unknown++
		}
	}
	if unknown != MaxUnknownTokens {
		t.Errorf("%d discovery tokens kept, want %d", unknown, MaxUnknownTokens)
	}
}
