package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMeshDeliversEverything runs two real sser replicas with 20
// subscribers and 20 events published on both: every subscriber must get
// every event exactly once, and the CPU and peer-request counts must be
// there.
func TestMeshDeliversEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts real sser processes")
	}
	bin := buildSser(t)
	ips := []string{"127.0.0.2", "127.0.0.3"}
	front, internal := freePorts(t, ips)
	cfg := config{
		sserBin: bin, sserArgs: "--drain-window=0s", replicas: 2, firstIP: ips[0],
		frontendPort: front, internalPort: internal,
		subs: 20, rate: 40, duration: 500 * time.Millisecond, events: 20, payload: 100,
		publishers: 2, dialers: 4, startTimeout: 30 * time.Second, drain: 10 * time.Second,
		engine: "sser", label: "test",
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	res, err := run(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *res)
	if !res.Complete || res.Published != 20 || res.Delivered != 20*20 || res.Missing != 0 || res.Duplicates != 0 {
		t.Fatalf("published %d, delivered %d of %d: missing %d, duplicates %d, disconnected %d (first error %q)",
			res.Published, res.Delivered, res.Expected, res.Missing, res.Duplicates, res.Disconnected, res.FirstError)
	}
	if res.CPUSeconds < 0 || res.P50Ms <= 0 || res.P99Ms < res.P50Ms {
		t.Fatalf("implausible result: %+v", *res)
	}
	// Replicas keep a delivery stream open to each peer: the requests
	// counted while publishing are the streams opened then, at most a few.
	if res.PeerMetric != "sser_peer_requests_total" || res.PeerRequests < 0 || res.PeerRequests > 4 {
		t.Fatalf("peer requests: metric %q, %g requests while publishing 20 events; want sser_peer_requests_total and at most a few", res.PeerMetric, res.PeerRequests)
	}
}

// buildSser builds ./cmd/sser of the library this module replaces, or
// skips the test when that fails.
func buildSser(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/sser-dev/sser").Output()
	if err != nil {
		t.Skipf("skipping: cannot find the sser module: %v", err)
	}
	root := strings.TrimSpace(string(out))
	bin := filepath.Join(t.TempDir(), "sser")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sser")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("skipping: go build ./cmd/sser in %s failed: %v\n%s", root, err, out)
	}
	return bin
}

// freePorts picks two different ports free on every IP, or skips the test
// when the loopback addresses cannot be bound. The listeners it opened are
// held until it returns, so the two ports differ.
func freePorts(t *testing.T, ips []string) (int, int) {
	t.Helper()
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			_ = ln.Close()
		}
	}()
	var got []int
	for attempt := 0; attempt < 100 && len(got) < 2; attempt++ {
		port := 0
		for i, ip := range ips {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				if i == 0 {
					t.Skipf("skipping: cannot listen on %s: %v", ip, err)
				}
				port = 0
				break
			}
			held = append(held, ln)
			port = ln.Addr().(*net.TCPAddr).Port
		}
		if port != 0 {
			got = append(got, port)
		}
	}
	if len(got) < 2 {
		t.Fatalf("no two ports free on all of %v in 100 attempts", ips)
	}
	return got[0], got[1]
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP sser_peer_post_duration_seconds Latency.
# TYPE sser_peer_post_duration_seconds histogram
sser_peer_post_duration_seconds_bucket{peer="127.0.0.3",le="0.0005"} 3
sser_peer_post_duration_seconds_sum{peer="127.0.0.3"} 0.5
sser_peer_post_duration_seconds_count{peer="127.0.0.3"} 7
sser_peer_post_duration_seconds_count{peer="127.0.0.4"} 5
sser_peer_requests_total{peer="a}b",kind="send"} 2
sser_peer_requests_total 1e1
`
	got, err := parseMetrics(strings.NewReader(text), peerRequestMetrics)
	if err != nil {
		t.Fatal(err)
	}
	if got["sser_peer_post_duration_seconds_count"] != 12 || got["sser_peer_requests_total"] != 12 || len(got) != 2 {
		t.Fatalf("parseMetrics = %v", got)
	}
	name, n := peerRequests(
		[]map[string]float64{{"sser_peer_post_duration_seconds_count": 2}, {}},
		[]map[string]float64{{"sser_peer_post_duration_seconds_count": 10}, {"sser_peer_post_duration_seconds_count": 4}},
	)
	if name != "sser_peer_post_duration_seconds_count" || n != 12 {
		t.Fatalf("peerRequests = %q, %g; want the fallback metric, 12", name, n)
	}
}

func TestReplicaIPs(t *testing.T) {
	ips, err := replicaIPs("127.0.0.2", 3)
	if err != nil || strings.Join(ips, ",") != "127.0.0.2,127.0.0.3,127.0.0.4" {
		t.Fatalf("replicaIPs = %v, %v", ips, err)
	}
	for _, bad := range []string{"10.0.0.2", "127.0.0.250", "127.0.0"} {
		if _, err := replicaIPs(bad, 10); err == nil {
			t.Errorf("replicaIPs(%q, 10) accepted", bad)
		}
	}
}
