package agent

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Prefix starts every milestone line on the console. The lab timeline and the e2e tests grep
// the serial console for it: keep it stable.
const Prefix = "imaged agent: "

// Console writes milestone lines, each starting with a prefix: Prefix for the agent, its own for
// an init Mode, which prints its own milestones through a Console too (the lab's os mode does).
// It is safe for concurrent use.
type Console struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

// NewConsole returns a Console that writes to w (os.Stdout if nil).
func NewConsole(w io.Writer, prefix string) *Console {
	if w == nil {
		w = os.Stdout
	}
	return &Console{w: w, prefix: prefix}
}

// Say writes one milestone line.
func (c *Console) Say(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, c.prefix+format+"\n", args...)
}

// SetPrefix changes the prefix of the lines that follow.
func (c *Console) SetPrefix(p string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prefix = p
}

// uptime is the time since the kernel booted (/proc/uptime), or 0 when unknown.
func uptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}
