package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/imaged/imaged/bench/internal/benchtab"
)

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / d.Seconds() / 1e6 }

func joinf(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(s, " ")
}

// newTable starts a table with the blockcopy header.
func newTable() benchtab.Table {
	return benchtab.Table{{"measure", "imaged blockcopy", "peer", "target", ""}}
}
