// Command benchtable reads the JSON lines that sseload --json prints (one
// per run, several rounds per scenario and engine) and prints a Markdown
// table of medians, with the range over rounds and each engine's ratio to
// sser.
//
//	benchtable < runs.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
)

type run struct {
	Label             string  `json:"label"`
	Engine            string  `json:"engine"`
	Subs              int     `json:"subs"`
	Events            int     `json:"events"`
	Rate              float64 `json:"rate"`
	MemPerConn        float64 `json:"memPerConn"`
	HeapPerConn       float64 `json:"heapPerConn"`
	StackPerConn      float64 `json:"stackPerConn"`
	RSSPerConn        float64 `json:"rssPerConn"`
	GoroutinesPerConn float64 `json:"goroutinesPerConn"`
	DeliveriesPerS    float64 `json:"deliveriesPerS"`
	EventsPerS        float64 `json:"eventsPerS"`
	P50Ms             float64 `json:"p50Ms"`
	P99Ms             float64 `json:"p99Ms"`
	Complete          bool    `json:"complete"`
	Disconnected      int     `json:"disconnected"`
}

// metric is one row of the table.
type metric struct {
	name string
	get  func(run) float64
	unit func(float64) string
}

var engines = []string{"sser", "r3labs", "gosse"}

func main() {
	var runs []run
	var labels []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r run
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			fmt.Fprintln(os.Stderr, "benchtable: skipping a line:", err)
			continue
		}
		runs = append(runs, r)
		if !slices.Contains(labels, r.Label) {
			labels = append(labels, r.Label)
		}
	}
	if len(runs) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no runs on stdin")
		os.Exit(1)
	}
	fmt.Println("| scenario | metric | sser | r3labs | gosse | r3labs ÷ sser | gosse ÷ sser |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
	for _, label := range labels {
		byEngine := map[string][]run{}
		var sample run
		for _, r := range runs {
			if r.Label == label {
				byEngine[r.Engine] = append(byEngine[r.Engine], r)
				sample = r
			}
		}
		for _, m := range metricsFor(sample) {
			cells := []string{label, m.name}
			med := map[string]float64{}
			for _, e := range engines {
				rs := byEngine[e]
				if len(rs) == 0 {
					cells = append(cells, "–")
					continue
				}
				vals := make([]float64, len(rs))
				for i, r := range rs {
					vals[i] = m.get(r)
				}
				slices.Sort(vals)
				med[e] = median(vals)
				cell := fmt.Sprintf("%s (%s–%s, n=%d)", m.unit(med[e]), m.unit(vals[0]), m.unit(vals[len(vals)-1]), len(vals))
				if bad := incomplete(rs); bad > 0 {
					cell += fmt.Sprintf(" ⚠%d incomplete", bad)
				}
				cells = append(cells, cell)
			}
			for _, e := range engines[1:] {
				base, okB := med["sser"]
				v, okV := med[e]
				if !okB || !okV || base == 0 {
					cells = append(cells, "–")
					continue
				}
				cells = append(cells, fmt.Sprintf("%.2f×", v/base))
			}
			fmt.Println("| " + strings.Join(cells, " | ") + " |")
		}
	}
}

func metricsFor(r run) []metric {
	idle := []metric{
		{"memory per idle conn (heap+stack)", func(r run) float64 { return r.MemPerConn }, bytes},
		{"RSS per idle conn", func(r run) float64 { return r.RSSPerConn }, bytes},
		{fmt.Sprintf("memory for %d idle conns", r.Subs), func(r run) float64 { return r.MemPerConn * float64(r.Subs) }, bytes},
		{"goroutines per conn", func(r run) float64 { return r.GoroutinesPerConn }, plain},
	}
	switch {
	case r.Events == 0:
		return idle
	case r.Rate == 0:
		return []metric{
			{"deliveries/s", func(r run) float64 { return r.DeliveriesPerS }, si},
			{"events/s (each to every subscriber)", func(r run) float64 { return r.EventsPerS }, si},
		}
	default:
		return []metric{
			{"latency p50", func(r run) float64 { return r.P50Ms }, ms},
			{"latency p99", func(r run) float64 { return r.P99Ms }, ms},
		}
	}
}

func incomplete(rs []run) int {
	n := 0
	for _, r := range rs {
		if r.Events > 0 && (!r.Complete || r.Disconnected > 0) {
			n++
		}
	}
	return n
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func bytes(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case a >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

func si(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case a >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func ms(v float64) string { return fmt.Sprintf("%.2f ms", v) }

func plain(v float64) string { return fmt.Sprintf("%.2f", v) }
