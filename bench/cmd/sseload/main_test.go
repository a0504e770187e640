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
			if res.Published != 50 || res.DeliveriesPerS <= 0 || res.P50Ms <= 0 || res.P99Ms < res.P50Ms || res.CPUUsPerDelivery <= 0 {
				t.Fatalf("implausible result: %+v", res)
			}
			if res.GoroutinesPerConn < 0.9 || res.GoroutinesPerConn > 5 {
				t.Fatalf("goroutines per connection %.2f, want 1 to 5", res.GoroutinesPerConn)
			}
		})
	}
}
