package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / d.Seconds() / 1e6 }

func median[T time.Duration | float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func joinf(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(s, " ")
}

func yes(b bool) string {
	if b {
		return "met"
	}
	return "NOT met"
}

func secs(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%.2f", d.Seconds()))
	}
	return strings.Join(s, " ")
}

type table [][5]string

func (t *table) add(a, b, c, d, e string) { *t = append(*t, [5]string{a, b, c, d, e}) }

func (t table) print(w io.Writer) {
	head := [5]string{"measure", "imaged blockcopy", "peer", "target", ""}
	var width [5]int
	for _, r := range append(t, head) {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, r := range append(table{head}, t...) {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < 4 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
