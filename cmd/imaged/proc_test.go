package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Tests that need imaged as a separate process (another user, a SIGKILL) run the binary built
// from this tree: go build, once per test run.

var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// imagedBinary builds cmd/imaged into a directory any user may read and execute.
func imagedBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "imaged-bin-"); built.err != nil {
			return
		}
		os.Chmod(built.dir, 0o755)
		built.bin = filepath.Join(built.dir, "imaged")
		out, err := exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveProcess runs `imaged serve -config cfg` as a child, as cred's user when cred is not nil,
// with the unit's UMask=0027, until the test ends. It returns the HTTP address the daemon
// logged and its log.
func serveProcess(t *testing.T, cfg string, cred *syscall.Credential) (string, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `umask 027 && exec "$0" serve -config "$1"`, imagedBinary(t), cfg)
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("imaged serve did not stop on SIGTERM; log:\n%s", logs)
		}
	})
	serving := regexp.MustCompile(`imaged serving.* http=(127\.0\.0\.1:\d+)`)
	deadline := time.After(30 * time.Second)
	for {
		if m := serving.FindStringSubmatch(logs.String()); m != nil {
			return m[1], logs
		}
		select {
		case err := <-exited:
			t.Fatalf("imaged serve exited: %v\n%s", err, logs)
		case <-deadline:
			t.Fatalf("imaged serve did not start in 30 s:\n%s", logs)
		case <-time.After(20 * time.Millisecond): // waiting for another process to log, not timing logic
		}
	}
}
