package dhcp

import (
	"sync"
	"time"
)

// throttle says yes to a key at most once per every, and to at most perMinute keys a minute
// in all. It remembers at most max keys, so a flood of random MACs costs bounded memory.
type throttle struct {
	mu          sync.Mutex
	every       time.Duration
	max         int
	perMinute   int
	seen        map[string]time.Time
	windowStart time.Time
	inWindow    int
}

func newThrottle(every time.Duration, max, perMinute int) *throttle {
	return &throttle{every: every, max: max, perMinute: perMinute, seen: map[string]time.Time{}}
}

func (t *throttle) allow(key string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, ok := t.seen[key]; ok && now.Sub(last) < t.every {
		return false
	}
	if now.Sub(t.windowStart) >= time.Minute {
		t.windowStart, t.inWindow = now, 0
	}
	if t.inWindow >= t.perMinute {
		return false
	}
	if len(t.seen) >= t.max {
		for k, last := range t.seen {
			if now.Sub(last) >= t.every {
				delete(t.seen, k)
			}
		}
		if len(t.seen) >= t.max {
			clear(t.seen) // still full of recent keys: forget them rather than grow
		}
	}
	t.seen[key] = now
	t.inWindow++
	return true
}
