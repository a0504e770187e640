package main

import (
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	in := strings.Join([]string{
		`{"label":"lat","engine":"sser","events":10,"rate":5,"p50Ms":2,"p99Ms":4,"cpuUsPerDelivery":3,"complete":true}`,
		`{"label":"lat","engine":"floor","events":10,"rate":5,"p50Ms":1,"p99Ms":2,"cpuUsPerDelivery":1.5,"complete":true}`,
		`{"label":"lat","engine":"sser-base","events":10,"rate":5,"p50Ms":4,"p99Ms":8,"cpuUsPerDelivery":6,"complete":false}`,
		`{"label":"x1","engine":"sser","replicas":1,"round":1,"p50Ms":1,"p99Ms":3,"cpuMsPerEvent":0.5,"complete":true}`,
		`{"label":"x1","engine":"sser","replicas":1,"round":2,"p50Ms":1,"p99Ms":5,"cpuMsPerEvent":0.5,"complete":true}`,
		`{"label":"x3","engine":"sser","replicas":3,"round":2,"p50Ms":2,"p99Ms":9,"cpuMsPerEvent":1,"peerReqPerEventPerPeer":0.25,"complete":true}`,
		`{"label":"x3","engine":"sser","replicas":3,"round":1,"p50Ms":2,"p99Ms":4,"cpuMsPerEvent":1,"peerReqPerEventPerPeer":0.25,"complete":true}`,
		`{"label":"storm","engine":"sser","subs":100,"missed":10,"reconnectsPerS":2000,"cpuUsPerReconnect":150,"reconnectExact":100}`,
		`{"label":"soak","engine":"sser","subs":100,"events":60,"rate":10,"p50Ms":3,"p99Ms":9,"complete":true,"samples":[{"rss":1048576},{"rss":2097152}],"rssGrowth":-1024}`,
		`not json`,
	}, "\n")
	var out strings.Builder
	if err := table(&out, strings.NewReader(in), diffs{{"x3", "x1"}}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"| scenario | metric | sser | sser-base | floor | sser-base ÷ sser | floor ÷ sser |",
		"| lat | server CPU per delivery | 3.00 µs (3.00 µs–3.00 µs, n=1) | 6.00 µs (6.00 µs–6.00 µs, n=1) ⚠1 incomplete | 1.50 µs (1.50 µs–1.50 µs, n=1) | 2.00× | 0.50× |",
		"| x3 | peer requests per event per peer | 0.250 (0.250–0.250, n=2) | – | – | – | – |",
		"| x1 | CPU per published event (all replicas) | 0.50 ms",
		// Round 1: 4-3, round 2: 9-5.
		"| x3 − x1 | latency p99 difference | 2.50 ms (1.00 ms–4.00 ms, n=2) | – | – | – | – |",
		"| storm | reconnects/s (Last-Event-ID, 10 missed events each) | 2.0k (2.0k–2.0k, n=1) |",
		"| storm | subscribers with exactly the missed events (of 100) | 100 (100–100, n=1) |",
		"| soak | RSS at the end | 2.0 MiB (2.0 MiB–2.0 MiB, n=1) |",
		"| soak | RSS growth after warm-up (a third in → end) | -1.0 KiB (-1.0 KiB–-1.0 KiB, n=1) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "| x1 | peer requests") {
		t.Errorf("a one-replica run shows peer requests:\n%s", got)
	}
}
