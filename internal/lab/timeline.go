package lab

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/internal/machines"
)

// Row is one line of a boot timeline: either what the blade's console showed or what imaged saw.
type Row struct {
	At     time.Duration // since QEMU started (power-on)
	Source string        // "console" or "imaged"
	Kind   string
	Text   string
}

// Timeline merges the console's milestones with imaged's events for the machine, ordered by
// time since power-on.
func Timeline(vm *Running, events []machines.Event) []Row {
	var rows []Row
	for _, m := range vm.Milestones() {
		rows = append(rows, Row{At: m.At, Source: "console", Kind: m.Name, Text: m.Text})
	}
	for _, e := range events {
		// A boot event repeated across boots is one event with a count (inventory.BootEvent):
		// for this boot, its latest repeat is the one.
		if e.Time.Before(vm.Started()) && e.Last != nil {
			e.Time = *e.Last
		}
		if e.Time.Before(vm.Started()) {
			continue
		}
		rows = append(rows, Row{At: e.Time.Sub(vm.Started()), Source: "imaged", Kind: e.Kind, Text: e.Message})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].At < rows[j].At })
	return rows
}

// PrintTimeline writes rows as a table.
func PrintTimeline(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  +SECONDS\tSOURCE\tWHAT\tDETAIL")
	for _, r := range rows {
		text := r.Text
		if len(text) > 100 {
			text = text[:97] + "..."
		}
		fmt.Fprintf(tw, "  %8.3f\t%s\t%s\t%s\n", r.At.Seconds(), r.Source, r.Kind, text)
	}
	tw.Flush()
}
