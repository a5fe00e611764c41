package progressbar

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"
)

func TestPlainLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		b := New(&out, 100<<20, Options{Desc: "import win10@1", Interval: 10 * time.Second})
		b.Set(1 << 20)
		if out.Len() != 0 {
			t.Fatalf("a line before the interval: %q", out.String())
		}
		time.Sleep(10 * time.Second)
		b.Set(50 << 20)
		time.Sleep(5 * time.Second)
		b.Set(60 << 20) // within the interval of the last line: nothing
		b.Finish(nil)
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		want := []string{
			"import win10@1: 50.0 MiB of 100.0 MiB (50%), 5.0 MiB/s, 10s elapsed",
			"import win10@1: 60.0 MiB of 100.0 MiB (60%), 4.0 MiB/s, 15s elapsed, done",
		}
		if len(lines) != len(want) || lines[0] != want[0] || lines[1] != want[1] {
			t.Fatalf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		if strings.ContainsAny(out.String(), "\r\x1b") {
			t.Error("escape codes in plain output")
		}
	})
}

func TestPlainFailure(t *testing.T) {
	var out bytes.Buffer
	b := New(&out, -1, Options{Desc: "import"})
	b.Set(3 << 30)
	b.Finish(errors.New("gzip: unexpected EOF"))
	b.Finish(nil) // once only
	if got := out.String(); got != "import: failed after 3.0 GiB: gzip: unexpected EOF\n" {
		t.Fatalf("%q", got)
	}
}

// TestTerminal draws on a real pseudo-terminal: the bar, not log lines.
func TestTerminal(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(master) // ends with EIO once the slave is closed
		got <- string(b)
	}()
	b := New(slave, 10<<20, Options{Desc: "import lab@2"})
	if b.bar == nil {
		t.Fatal("a terminal got plain lines")
	}
	for i := range 10 {
		b.Set(int64(i+1) << 20)
		time.Sleep(15 * time.Millisecond)
	}
	b.Finish(nil)
	slave.Close()
	out := <-got
	if !strings.Contains(out, "import lab@2") || !strings.Contains(out, "100%") || !strings.Contains(out, "\r") {
		t.Fatalf("terminal output %q: want a bar reaching 100%%", out)
	}
}
