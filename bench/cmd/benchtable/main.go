// Command benchtable reads the JSON lines that sseload --json and ssemesh
// --json print (one per run, several rounds per scenario and engine) and
// prints a Markdown table of medians, with the range over rounds and each
// engine's ratio to sser (other ÷ sser).
//
//	benchtable < runs.jsonl
//	benchtable -diff 'cross 3 replicas;cross 1 replica' < runs.jsonl
//
// Each -diff "A;B" adds rows with the latency of scenario A minus that of
// scenario B, taken round by round (runs with the same round number, or
// else the n-th run of each), then the median and range of those.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

type run struct {
	Label              string  `json:"label"`
	Engine             string  `json:"engine"`
	Subs               int     `json:"subs"`
	Events             int     `json:"events"`
	Rate               float64 `json:"rate"`
	MemPerConn         float64 `json:"memPerConn"`
	HeapPerConn        float64 `json:"heapPerConn"`
	StackPerConn       float64 `json:"stackPerConn"`
	RSSPerConn         float64 `json:"rssPerConn"`
	GoroutinesPerConn  float64 `json:"goroutinesPerConn"`
	DeliveriesPerS     float64 `json:"deliveriesPerS"`
	EventsPerS         float64 `json:"eventsPerS"`
	P50Ms              float64 `json:"p50Ms"`
	P99Ms              float64 `json:"p99Ms"`
	Complete           bool    `json:"complete"`
	Disconnected       int     `json:"disconnected"`
	CPUUsPerDelivery   float64 `json:"cpuUsPerDelivery"`
	Origins            int     `json:"origins"`
	IDBytesPerEvent    float64 `json:"idBytesPerEvent"`
	FrameBytesPerEvent float64 `json:"frameBytesPerEvent"`
	WireBytesPerEvent  float64 `json:"wireBytesPerEvent"`
	ServerP50Ms        float64 `json:"serverP50Ms"`
	ServerP99Ms        float64 `json:"serverP99Ms"`
	Missed             int     `json:"missed"`
	ReconnectsPerS     float64 `json:"reconnectsPerS"`
	CPUUsPerReconnect  float64 `json:"cpuUsPerReconnect"`
	ReconnectExact     int     `json:"reconnectExact"`
	Samples            []struct {
		RSS uint64 `json:"rss"`
	} `json:"samples"`
	RSSGrowth float64 `json:"rssGrowth"`

	// ssemesh runs (Replicas > 0).
	Replicas               int     `json:"replicas"`
	Round                  int     `json:"round"`
	CPUMsPerEvent          float64 `json:"cpuMsPerEvent"`
	CPUMsPerEventAboveIdle float64 `json:"cpuMsPerEventAboveIdle"`
	PeerReqPerEventPerPeer float64 `json:"peerReqPerEventPerPeer"`
	PublishedPerS          float64 `json:"publishedPerS"`
}

// metric is one row of the table.
type metric struct {
	name string
	get  func(run) float64
	unit func(float64) string
}

// engineOrder is the column order of the engines it knows; others follow
// in the order they first appear.
var engineOrder = []string{"sser", "sser-base", "floor", "r3labs", "gosse"}

// diffs is the -diff flag: pairs of scenario labels.
type diffs [][2]string

func (d *diffs) String() string { return fmt.Sprint(*d) }

func (d *diffs) Set(v string) error {
	a, b, ok := strings.Cut(v, ";")
	if !ok || a == "" || b == "" {
		return fmt.Errorf("want \"LABEL A;LABEL B\", got %q", v)
	}
	*d = append(*d, [2]string{a, b})
	return nil
}

func main() {
	var ds diffs
	flag.Var(&ds, "diff", `"LABEL A;LABEL B": add rows of A's latency minus B's, round by round (repeatable)`)
	flag.Parse()
	if err := table(os.Stdout, os.Stdin, ds); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

// table reads runs from in and writes the table to w.
func table(w io.Writer, in io.Reader, ds diffs) error {
	var runs []run
	var labels []string
	sc := bufio.NewScanner(in)
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
	if err := sc.Err(); err != nil {
		return err
	}
	if len(runs) == 0 {
		return errors.New("no runs on stdin")
	}
	engines := enginesOf(runs)
	head := []string{"scenario", "metric"}
	align := []string{"---", "---"}
	for _, e := range engines {
		head = append(head, e)
		align = append(align, "---:")
	}
	for _, e := range engines {
		if e != "sser" {
			head = append(head, e+" ÷ sser")
			align = append(align, "---:")
		}
	}
	fmt.Fprintln(w, "| "+strings.Join(head, " | ")+" |")
	fmt.Fprintln(w, "| "+strings.Join(align, " | ")+" |")
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
			vals := map[string][]float64{}
			bad := map[string]int{}
			for e, rs := range byEngine {
				for _, r := range rs {
					vals[e] = append(vals[e], m.get(r))
				}
				bad[e] = incomplete(rs)
			}
			printRow(w, label, m.name, m.unit, engines, vals, bad)
		}
	}
	for _, d := range ds {
		for _, m := range []metric{
			{"latency p50 difference", func(r run) float64 { return r.P50Ms }, ms},
			{"latency p99 difference", func(r run) float64 { return r.P99Ms }, ms},
		} {
			vals := map[string][]float64{}
			for _, e := range engines {
				vals[e] = pairDiffs(runs, e, d[0], d[1], m.get)
			}
			printRow(w, d[0]+" − "+d[1], m.name, m.unit, engines, vals, nil)
		}
	}
	return nil
}

// enginesOf lists the engines in runs: the known ones in engineOrder, then
// the others as they first appear.
func enginesOf(runs []run) []string {
	var out []string
	for _, e := range engineOrder {
		if slices.ContainsFunc(runs, func(r run) bool { return r.Engine == e }) {
			out = append(out, e)
		}
	}
	for _, r := range runs {
		if !slices.Contains(out, r.Engine) {
			out = append(out, r.Engine)
		}
	}
	return out
}

// printRow prints one table row: per engine the median of its values with
// their range and count (and how many of its runs were incomplete), then
// each engine's median divided by sser's.
func printRow(w io.Writer, label, name string, unit func(float64) string, engines []string, vals map[string][]float64, bad map[string]int) {
	cells := []string{label, name}
	med := map[string]float64{}
	for _, e := range engines {
		vs := slices.Clone(vals[e])
		if len(vs) == 0 {
			cells = append(cells, "–")
			continue
		}
		slices.Sort(vs)
		med[e] = median(vs)
		cell := fmt.Sprintf("%s (%s–%s, n=%d)", unit(med[e]), unit(vs[0]), unit(vs[len(vs)-1]), len(vs))
		if bad[e] > 0 {
			cell += fmt.Sprintf(" ⚠%d incomplete", bad[e])
		}
		cells = append(cells, cell)
	}
	for _, e := range engines {
		if e == "sser" {
			continue
		}
		base, okB := med["sser"]
		v, okV := med[e]
		if !okB || !okV || base <= 0 || v < 0 {
			cells = append(cells, "–")
			continue
		}
		cells = append(cells, fmt.Sprintf("%.2f×", v/base))
	}
	fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
}

// pairDiffs is get(A) − get(B) for each round in which engine has a run of
// both scenarios: runs are paired by their round number when both have one,
// else by their order.
func pairDiffs(runs []run, engine, a, b string, get func(run) float64) []float64 {
	var as, bs []run
	for _, r := range runs {
		switch {
		case r.Engine != engine:
		case r.Label == a:
			as = append(as, r)
		case r.Label == b:
			bs = append(bs, r)
		}
	}
	var out []float64
	for i, ra := range as {
		if ra.Round > 0 {
			j := slices.IndexFunc(bs, func(rb run) bool { return rb.Round == ra.Round })
			if j >= 0 {
				out = append(out, get(ra)-get(bs[j]))
			}
			continue
		}
		if i < len(bs) {
			out = append(out, get(ra)-get(bs[i]))
		}
	}
	return out
}

func metricsFor(r run) []metric {
	idle := []metric{
		{"memory per idle conn (heap+stack)", func(r run) float64 { return r.MemPerConn }, bytes},
		{"RSS per idle conn", func(r run) float64 { return r.RSSPerConn }, bytes},
		{fmt.Sprintf("memory for %d idle conns", r.Subs), func(r run) float64 { return r.MemPerConn * float64(r.Subs) }, bytes},
		{"goroutines per conn", func(r run) float64 { return r.GoroutinesPerConn }, plain},
	}
	cpu := metric{"server CPU per delivery", func(r run) float64 { return r.CPUUsPerDelivery }, us}
	switch {
	case r.Origins > 0 || strings.HasPrefix(r.Label, "ids:"):
		return []metric{
			{"id bytes per event", func(r run) float64 { return r.IDBytesPerEvent }, plain},
			{"frame bytes per event", func(r run) float64 { return r.FrameBytesPerEvent }, plain},
			{"latency p99", func(r run) float64 { return r.P99Ms }, ms},
		}
	case r.Replicas > 0:
		m := []metric{
			{"latency p50", func(r run) float64 { return r.P50Ms }, ms},
			{"latency p99", func(r run) float64 { return r.P99Ms }, ms},
			{"CPU per published event (all replicas)", func(r run) float64 { return r.CPUMsPerEvent }, ms},
			{"CPU per published event above idle", func(r run) float64 { return r.CPUMsPerEventAboveIdle }, ms},
			{fmt.Sprintf("events/s published (target %g)", r.Rate), func(r run) float64 { return r.PublishedPerS }, si},
		}
		if r.Replicas > 1 {
			m = append(m, metric{"peer requests per event per peer", func(r run) float64 { return r.PeerReqPerEventPerPeer }, plain3})
		}
		return m
	case r.Missed > 0:
		return []metric{
			{fmt.Sprintf("reconnects/s (Last-Event-ID, %d missed events each)", r.Missed), func(r run) float64 { return r.ReconnectsPerS }, si},
			{"server CPU per reconnect", func(r run) float64 { return r.CPUUsPerReconnect }, us},
			{fmt.Sprintf("subscribers with exactly the missed events (of %d)", r.Subs), func(r run) float64 { return float64(r.ReconnectExact) }, whole},
		}
	case len(r.Samples) > 0:
		return []metric{
			{"latency p50", func(r run) float64 { return r.P50Ms }, ms},
			{"latency p99", func(r run) float64 { return r.P99Ms }, ms},
			{"RSS at the end", func(r run) float64 { return float64(r.Samples[len(r.Samples)-1].RSS) }, bytes},
			{"RSS growth after warm-up (a third in → end)", func(r run) float64 { return r.RSSGrowth }, bytes},
		}
	case r.Events == 0:
		return idle
	case r.Rate == 0:
		return withWire(r, []metric{
			{"deliveries/s", func(r run) float64 { return r.DeliveriesPerS }, si},
			{"events/s (each to every subscriber)", func(r run) float64 { return r.EventsPerS }, si},
			cpu,
		})
	default:
		return withWire(r, []metric{
			{"latency p50", func(r run) float64 { return r.P50Ms }, ms},
			{"latency p99", func(r run) float64 { return r.P99Ms }, ms},
			cpu,
		})
	}
}

// withWire adds the bytes on the wire per event, for runs that counted
// them (older runs did not).
func withWire(r run, m []metric) []metric {
	if r.ServerP50Ms > 0 && r.Rate > 0 {
		m = append(m, metric{"server's own latency p50 (publish to write)", func(r run) float64 { return r.ServerP50Ms }, ms},
			metric{"server's own latency p99", func(r run) float64 { return r.ServerP99Ms }, ms})
	}
	if r.WireBytesPerEvent == 0 {
		return m
	}
	return append(m, metric{"bytes on the wire per event", func(r run) float64 { return r.WireBytesPerEvent }, plain})
}

func incomplete(rs []run) int {
	n := 0
	for _, r := range rs {
		if (r.Events > 0 || r.Replicas > 0) && (!r.Complete || r.Disconnected > 0) {
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

func us(v float64) string { return fmt.Sprintf("%.2f µs", v) }

func plain(v float64) string { return fmt.Sprintf("%.2f", v) }

func whole(v float64) string { return fmt.Sprintf("%.0f", v) }

func plain3(v float64) string { return fmt.Sprintf("%.3f", v) }
