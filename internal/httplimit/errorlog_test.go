package httplimit

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestErrorLogBounded: a client that makes net/http log (a TLS handshake dropped halfway, say)
// ten thousand times in a minute costs ErrorLogBurst lines; the next minute's first line says
// how many were left out.
func TestErrorLogBounded(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1800000000, 0)
	l := newErrorLog(slog.New(slog.NewTextHandler(&buf, nil)), slog.LevelWarn, func() time.Time { return now })
	for range 10000 {
		l.Printf("http: TLS handshake error from 10.99.0.66:40000: EOF")
		now = now.Add(time.Millisecond)
	}
	if n := strings.Count(buf.String(), "\n"); n != ErrorLogBurst {
		t.Fatalf("%d lines logged in 10 s, want %d:\n%s", n, ErrorLogBurst, buf.String())
	}
	now = now.Add(time.Minute)
	buf.Reset()
	l.Printf("http: TLS handshake error from 10.99.0.66:40001: EOF")
	if got := buf.String(); !strings.Contains(got, "and 9990 more such lines left out") || !strings.Contains(got, "level=WARN") {
		t.Errorf("the next minute's line: %q", got)
	}
}
