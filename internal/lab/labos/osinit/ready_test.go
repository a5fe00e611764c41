package osinit

import (
	"bufio"
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/lab/labos"
)

func TestReadyListener(t *testing.T) {
	d := images.Digest(sha256.Sum256([]byte("image")))
	line := labos.ReadyLine(d)
	if line != "imaged-os sha256:6105d6cc76af400325e94d588ce511be5bfdbb73b437dc51eca43917d7a43e3d\n" {
		t.Fatalf("ReadyLine = %q", line)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveReady(ctx, ln, line, slog.New(slog.DiscardHandler)) }()

	// A probe that only connects and hangs up must not disturb the next ones.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for i := range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || got != line {
			t.Fatalf("connection %d read %q, %v; want %q", i, got, err, line)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveReady after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serveReady did not return after cancel")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the port still accepts connections after cancel")
	}
}

// A listener that fails for good ends serveReady with the error.
func TestReadyListenerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := serveReady(context.Background(), ln, "x\n", slog.New(slog.DiscardHandler)); err == nil {
		t.Error("serveReady on a closed listener returned nil")
	}
}
