// Package progress shows how far a long copy is for the CLI: a progress bar when the output is
// a terminal, a plain line every Interval otherwise (logs, CI, systemd's journal), so that
// non-interactive output carries no carriage returns or escape codes.
//
// Typical use with an import:
//
//	src, _ := convert.Open(ctx, source, opt)
//	_, total := src.Progress()
//	bar := progress.New(os.Stderr, total, progress.Options{Desc: "import win10@1"})
//	d, m, err := store.Import(ctx, src.Raw(), func(int64) { done, _ := src.Progress(); bar.Set(done) })
//	bar.Finish(err)
package progressbar

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Options tunes a Bar. The zero value is usable.
type Options struct {
	Desc     string        // what is being copied
	Interval time.Duration // between plain lines; default 10 s
}

// Bar reports progress towards a total number of bytes (-1 if unknown). Its methods are safe
// for concurrent use.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	opt      Options
	total    int64
	bar      *progressbar.ProgressBar // nil when w is not a terminal
	start    time.Time
	lastLine time.Time
	n        int64
	done     bool
}

// New starts a Bar writing to w (normally os.Stderr).
func New(w io.Writer, total int64, opt Options) *Bar {
	if opt.Interval <= 0 {
		opt.Interval = 10 * time.Second
	}
	b := &Bar{w: w, opt: opt, total: total, start: time.Now()}
	b.lastLine = b.start
	if f, ok := w.(interface{ Fd() uintptr }); ok && term.IsTerminal(int(f.Fd())) {
		b.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(opt.Desc),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return b
}

// Set records that n bytes are done.
func (b *Bar) Set(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.n = n
	if b.bar != nil {
		b.bar.Set64(n)
		return
	}
	if now := time.Now(); now.Sub(b.lastLine) >= b.opt.Interval {
		b.lastLine = now
		fmt.Fprintln(b.w, b.line(now))
	}
}

// Finish ends the report: the bar completes (or stops where it is if err is not nil) and one
// last line tells the outcome.
func (b *Bar) Finish(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if b.bar != nil {
		if err == nil {
			b.bar.Finish()
		} else {
			b.bar.Exit()
			fmt.Fprintln(b.w)
		}
		return
	}
	if err != nil {
		fmt.Fprintf(b.w, "%s: failed after %s: %v\n", b.desc(), bytesStr(b.n), err)
		return
	}
	fmt.Fprintln(b.w, b.line(time.Now())+", done")
}

func (b *Bar) desc() string {
	if b.opt.Desc == "" {
		return "progress"
	}
	return b.opt.Desc
}

func (b *Bar) line(now time.Time) string {
	el := now.Sub(b.start)
	s := fmt.Sprintf("%s: %s", b.desc(), bytesStr(b.n))
	if b.total > 0 {
		s += fmt.Sprintf(" of %s (%d%%)", bytesStr(b.total), b.n*100/b.total)
	}
	if el > 0 {
		s += fmt.Sprintf(", %s/s, %s elapsed", bytesStr(int64(float64(b.n)/el.Seconds())), el.Round(time.Second))
	}
	return s
}

func bytesStr(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
