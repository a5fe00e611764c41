package tftp

import (
	"testing"
	"time"
)

// A transfer in flight when Run's context ends completes; new requests get no answer.
func TestDrainOnShutdown(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "f", 64*512+10)
	ts := startServer(t, Config{Roots: []string{dir}})
	c := ts.raw()
	c.send(rrq("f"))
	var got []byte
	for n := uint16(1); ; n++ {
		blk, data := dataBlock(t, c.mustRecv(2*time.Second))
		if blk != n {
			t.Fatalf("block %d, want %d", blk, n)
		}
		got = append(got, data...)
		if n == 10 {
			ts.cancel()
			// Run must still be draining, and the listening socket closed.
			late := ts.raw()
			late.send(rrq("f"))
			if p := late.recv(200 * time.Millisecond); p != nil {
				t.Errorf("request after cancel answered: %q", p)
			}
			select {
			case err := <-ts.done:
				t.Fatalf("Run returned (%v) with a transfer in flight", err)
			default:
			}
		}
		c.send(ack(n))
		if len(data) < 512 {
			break
		}
	}
	select {
	case err := <-ts.done:
		ts.done <- err // for the cleanup's check
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the transfer ended")
	}
	if sum(got) != sum(want) {
		t.Fatalf("drained transfer: %d bytes, want %d", len(got), len(want))
	}
	if trs := ts.obs.all(); len(trs) != 1 || trs[0].Outcome != OutcomeOK {
		t.Errorf("transfers %+v, want one ok", trs)
	}
}

// A client that stalls cannot hold shutdown past DrainTimeout; it is told the server stops.
func TestDrainDeadline(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, dir, "f", 5000)
	ts := startServer(t, Config{Roots: []string{dir}, Timeout: 5 * time.Second, DrainTimeout: 300 * time.Millisecond})
	c := ts.raw()
	c.send(rrq("f"))
	dataBlock(t, c.mustRecv(time.Second)) // and never acknowledge it
	start := time.Now()
	ts.cancel()
	select {
	case err := <-ts.done:
		ts.done <- err
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after the drain deadline")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("Run returned after %v, before the drain deadline", d)
	}
	if msg := wantError(t, c.mustRecv(time.Second), codeUndefined); msg != "server shutting down" {
		t.Errorf("error message %q", msg)
	}
	if trs := ts.obs.all(); len(trs) != 1 || trs[0].Outcome != OutcomeError {
		t.Errorf("transfers %+v, want one error", trs)
	}
}
