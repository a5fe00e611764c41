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

// console writes milestone lines, each starting with prefix (Prefix unless an init Mode or
// ConfigureNIC's caller says otherwise).
type console struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func newConsole(w io.Writer) *console {
	if w == nil {
		w = os.Stdout
	}
	return &console{w: w, prefix: Prefix}
}

func (c *console) say(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, c.prefix+format+"\n", args...)
}

func (c *console) setPrefix(p string) {
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
