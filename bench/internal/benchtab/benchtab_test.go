package benchtab

import (
	"strings"
	"testing"
	"time"
)

func TestPrint(t *testing.T) {
	tb := Table{{"measure", "imaged", "peer"}}
	tb.Add("rate", "507.8 MB/s", "524.3 MB/s")
	tb.Add("runs (s)", Secs([]time.Duration{2150 * time.Millisecond, 2140 * time.Millisecond}), "")
	var b strings.Builder
	tb.Print(&b)
	want := "measure   imaged      peer\nrate      507.8 MB/s  524.3 MB/s\nruns (s)  2.15 2.14\n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
	if Median([]float64{3, 1, 2}) != 2 || Met(false) != "NOT met" {
		t.Error("Median or Met")
	}
	if got := Of(870, 1000); got != "87 %" {
		t.Errorf("Of(870, 1000) = %q, want 87 %%", got)
	}
	if got := PerGB(3*time.Second, 2<<30); got != "1.40 s/GB" {
		t.Errorf("PerGB(3 s, 2 GiB) = %q, want 1.40 s/GB", got)
	}
}
