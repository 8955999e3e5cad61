package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// row is one line of the summary table: a figure for blauth beside its reference, measured in
// the same run.
type row struct {
	What    string
	Figure  string // blauth
	Ref     string // the reference and its value
	Ratio   string // figure / reference, when it means something
	Target  string
	Verdict string // "met", "MISSED", or "" for figures reported for information
}

// section is a part of the details: how a figure was measured, and the raw numbers.
type section struct {
	Title string
	Body  strings.Builder
}

func (s *section) printf(format string, a ...any) { fmt.Fprintf(&s.Body, format, a...) }

// quantile is the nearest-rank quantile q (0..1) of sorted xs.
func quantile[T int64 | float64 | time.Duration](sorted []T, q float64) T {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func durationsMs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	slices.Sort(out)
	return out
}

func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func mib(v float64) string { return fmt.Sprintf("%.1f MiB", v) }

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	r := a / b
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0f×", r)
	case r >= 10:
		return fmt.Sprintf("%.1f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// table renders rows as a Markdown table, which also reads well in a terminal.
func table(rows []row) string {
	head := []string{"What", "blauth", "Reference (same run)", "Ratio", "Target"}
	cells := [][]string{head}
	for _, r := range rows {
		target := r.Target
		if r.Verdict != "" {
			target += " — " + r.Verdict
		}
		cells = append(cells, []string{r.What, r.Figure, r.Ref, r.Ratio, target})
	}
	width := make([]int, len(head))
	for _, c := range cells {
		for i, s := range c {
			width[i] = max(width[i], len([]rune(s)))
		}
	}
	var b strings.Builder
	line := func(c []string) {
		b.WriteString("|")
		for i, s := range c {
			b.WriteString(" " + s + strings.Repeat(" ", width[i]-len([]rune(s))) + " |")
		}
		b.WriteString("\n")
	}
	line(cells[0])
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, c := range cells[1:] {
		line(c)
	}
	return b.String()
}

func numCPU() int { return runtime.NumCPU() }
