// Package benchtab prints the benchmarks' tables: columns padded to their widest cell, and the
// small helpers every table uses (medians, lists of run times, shares, CPU per GB, a target's
// verdict).
package benchtab

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Table is rows of cells; the first row is the header.
type Table [][]string

// Add appends a row.
func (t *Table) Add(cells ...string) { *t = append(*t, cells) }

// Print writes the table with every column padded to its widest cell.
func (t Table) Print(w io.Writer) {
	var width []int
	for _, r := range t {
		for i, c := range r {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, r := range t {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// Median is the middle of xs (the upper one of an even count).
func Median[T time.Duration | float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// Secs lists durations in seconds, "2.15 2.14 2.13".
func Secs(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%.2f", d.Seconds()))
	}
	return strings.Join(s, " ")
}

// Met is a target's verdict.
func Met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// Of is a as a share of b, "87 %": a rate against its peer's, or over HTTPS against plain.
func Of(a, b float64) string { return fmt.Sprintf("%.0f %%", 100*a/b) }

// PerGB is CPU time per gigabyte (10⁹ bytes) moved, "0.42 s/GB".
func PerGB(cpu time.Duration, bytes int64) string {
	return fmt.Sprintf("%.2f s/GB", cpu.Seconds()/(float64(bytes)/1e9))
}
