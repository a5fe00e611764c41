package httplimit

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// net/http logs what goes wrong on a connection before a handler runs (a TLS handshake refused,
// a malformed request line, an accept error) through the server's ErrorLog, and anyone who
// reaches the port decides how often: a client that opens connections and hangs up in the
// middle of the TLS handshake writes a log line each time. ErrorLog bounds that door too.

// ErrorLogBurst is how many of net/http's error lines one server logs a minute; the rest are
// counted, and the next line logged says how many were left out.
const ErrorLogBurst = 10

// ErrorLog returns a logger for http.Server.ErrorLog that writes to log at level at most
// ErrorLogBurst lines a minute.
func ErrorLog(to *slog.Logger, level slog.Level) *log.Logger {
	return newErrorLog(to, level, time.Now)
}

func newErrorLog(l *slog.Logger, level slog.Level, now func() time.Time) *log.Logger {
	return log.New(&errorLog{log: l, level: level, now: now}, "", 0)
}

type errorLog struct {
	log   *slog.Logger
	level slog.Level
	now   func() time.Time

	mu         sync.Mutex
	window     time.Time // start of the current minute
	n          int       // lines logged in it
	suppressed int       // lines left out since the last one logged
}

func (e *errorLog) Write(p []byte) (int, error) {
	now := e.now()
	e.mu.Lock()
	if now.Sub(e.window) >= time.Minute {
		e.window, e.n = now, 0
	}
	if e.n >= ErrorLogBurst {
		e.suppressed++
		e.mu.Unlock()
		return len(p), nil
	}
	e.n++
	left := e.suppressed
	e.suppressed = 0
	e.mu.Unlock()
	msg := strings.TrimSuffix(string(p), "\n")
	if left > 0 {
		msg += fmt.Sprintf(" (and %d more such lines left out in the last minute)", left)
	}
	e.log.Log(context.Background(), e.level, msg)
	return len(p), nil
}
