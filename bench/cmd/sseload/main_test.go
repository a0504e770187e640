package main

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for sseload: run starts the server
// process by re-executing os.Executable with "serve".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if err := serve(context.Background(), os.Args[2:]); err != nil {
			os.Stderr.WriteString("serve: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRunEveryEngine runs a small measurement of each engine end to end:
// every subscriber must get every event, in order, and the idle numbers
// must be plausible.
func TestRunEveryEngine(t *testing.T) {
	for _, engine := range engineNames {
		t.Run(engine, func(t *testing.T) {
			cfg := config{engine: engine, subs: 20, events: 50, payload: 64, duration: time.Minute, dialers: 4, sserQueue: 200}
			res, err := run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Complete || res.Delivered != 20*50 || res.Disconnected != 0 || res.OutOfOrder != 0 {
				t.Fatalf("delivered %d of %d, %d disconnected, %d out of order", res.Delivered, res.Expected, res.Disconnected, res.OutOfOrder)
			}
			if res.Published != 50 || res.DeliveriesPerS <= 0 || res.P50Ms <= 0 || res.P99Ms < res.P50Ms {
				t.Fatalf("implausible result: %+v", res)
			}
			if res.GoroutinesPerConn < 0.9 || res.GoroutinesPerConn > 5 {
				t.Fatalf("goroutines per connection %.2f, want 1 to 5", res.GoroutinesPerConn)
			}
		})
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name     string
		samples  []time.Duration
		q        float64
		wantMs   float64
		tolerant float64 // relative
	}{
		{name: "exact below 64µs", samples: []time.Duration{10 * time.Microsecond}, q: 0.5, wantMs: 0.0105, tolerant: 0.01},
		{name: "millisecond", samples: []time.Duration{time.Millisecond}, q: 0.5, wantMs: 1, tolerant: 0.04},
		{name: "second", samples: []time.Duration{time.Second}, q: 0.99, wantMs: 1000, tolerant: 0.04},
		{name: "p50 of 1..100ms", samples: spread(100), q: 0.5, wantMs: 51, tolerant: 0.04},
		{name: "p99 of 1..100ms", samples: spread(100), q: 0.99, wantMs: 100, tolerant: 0.04},
		{name: "negative clamps to zero", samples: []time.Duration{-time.Second}, q: 0.5, wantMs: 0.0005, tolerant: 0.01},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h, merged histogram
			for _, s := range tc.samples {
				h.record(s)
			}
			merged.merge(&h)
			for _, got := range []float64{h.quantile(tc.q), merged.quantile(tc.q)} {
				if d := (got - tc.wantMs) / tc.wantMs; d > tc.tolerant || d < -tc.tolerant {
					t.Fatalf("quantile(%g) = %gms, want %gms within %g%%", tc.q, got, tc.wantMs, 100*tc.tolerant)
				}
			}
		})
	}
}

func spread(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * time.Millisecond
	}
	return out
}

func TestCutInt(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		rest string
		ok   bool
	}{
		{"12 34 x", 12, "34 x", true},
		{"0 1", 0, "1", true},
		{" 1", 0, " 1", false},
		{"12", 0, "12", false},
		{"1a ", 0, "1a ", false},
		{"99999999999999999999 x", 0, "99999999999999999999 x", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			n, rest, ok := cutInt([]byte(tc.in))
			if n != tc.want || string(rest) != tc.rest || ok != tc.ok {
				t.Fatalf("cutInt(%q) = %d, %q, %v; want %d, %q, %v", tc.in, n, rest, ok, tc.want, tc.rest, tc.ok)
			}
		})
	}
}
