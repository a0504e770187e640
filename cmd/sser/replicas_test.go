package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
)

// startStatic starts real sser processes on 127.0.0.2, 127.0.0.3, ... with
// the same ports and a static peer list, as pods on one Service would be.
func startStatic(t *testing.T, n int, extra ...string) []*testproc.Replica {
	t.Helper()
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.0.0.%d", i+2)
	}
	front, internal := testproc.FreePorts(t, ips...)
	reps := make([]*testproc.Replica, n)
	for i, ip := range ips {
		args := append([]string{"--peer-finder=static", "--peers=" + strings.Join(ips, ","), "--pod-ip=" + ip,
			"--drain-window=0s", "--peer-backoff-max=500ms"}, extra...)
		reps[i] = testproc.Start(t, testproc.Config{IP: ip, FrontendPort: front, InternalPort: internal, Args: args})
	}
	return reps
}

func publish(t *testing.T, base, body string) {
	t.Helper()
	resp, err := http.Post(base+"/api/json/v1/publish", "application/json", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("publish to %s: %s", base, resp.Status)
	}
}

// checkOrder verifies that the events "<publisher>-<n>" arrived with each
// publisher's n strictly increasing by one from 0 to per-1, none missing,
// none twice.
func checkOrder(t *testing.T, name string, evs []ssetest.Event, publishers, per int) {
	t.Helper()
	next := make(map[string]int)
	for _, ev := range evs {
		p, nText, ok := strings.Cut(ev.Data, "-")
		n, err := strconv.Atoi(nText)
		if !ok || err != nil {
			t.Errorf("%s: unexpected event %q", name, ev.Data)
			continue
		}
		if n != next[p] {
			t.Errorf("%s: publisher %s: got %d, want %d (out of order, missing or duplicate)", name, p, n, next[p])
			return
		}
		next[p]++
	}
	if len(next) != publishers {
		t.Errorf("%s: events from %d publishers, want %d", name, len(next), publishers)
	}
	for p, n := range next {
		if n != per {
			t.Errorf("%s: publisher %s: %d events, want %d", name, p, n, per)
		}
	}
}

func TestReplicasFanOutInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	reps := startStatic(t, 3)
	subs := make([]*ssetest.Sub, len(reps))
	for i, r := range reps {
		subs[i] = ssetest.Dial(t, r.FrontendURL+"/events?stream=fan", "")
	}
	const per = 300
	var wg sync.WaitGroup
	for i, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Batches of 10 through the publish API, as a sidecar app would.
			for n := 0; n < per; n += 10 {
				var parts []string
				for k := n; k < n+10; k++ {
					parts = append(parts, fmt.Sprintf(`{"stream":"fan","msg":"p%d-%d"}`, i, k))
				}
				publish(t, r.InternalURL, "["+strings.Join(parts, ",")+"]")
			}
		}()
	}
	wg.Wait()
	for i, s := range subs {
		evs := s.Collect(3*per, 30*time.Second)
		checkOrder(t, reps[i].IP, evs, 3, per)
	}
}

func TestSeedSendIsLocalOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	reps := startStatic(t, 3)
	subs := make([]*ssetest.Sub, len(reps))
	for i, r := range reps {
		subs[i] = ssetest.Dial(t, r.FrontendURL+"/events?stream=seed", "")
	}
	resp, err := http.Post(reps[0].InternalURL+"/api/json/v1/send", "application/json", strings.NewReader(`{"stream":"seed","msg":"only here"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := subs[0].Next(t, 10*time.Second); got.Data != "only here" {
		t.Fatalf("replica 0 got %+v", got)
	}
	// A published marker goes everywhere; on the other replicas it must be
	// the first event, proving the origin-less event never reached them.
	publish(t, reps[1].InternalURL, `{"stream":"seed","msg":"marker"}`)
	for i, s := range subs {
		if got := s.Next(t, 10*time.Second); got.Data != "marker" {
			t.Errorf("replica %d: first event %q, want marker", i, got.Data)
		}
	}
}

func TestKilledReplicaDoesNotStopTheOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	reps := startStatic(t, 3)
	a := ssetest.Dial(t, reps[0].FrontendURL+"/events?stream=k", "")
	b := ssetest.Dial(t, reps[1].FrontendURL+"/events?stream=k", "")
	if err := reps[2].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := reps[2].Wait(t.Context()); err == nil {
		t.Fatal("killed replica exited cleanly?")
	}
	const n = 200
	for i := range n {
		publish(t, reps[i%2].InternalURL, fmt.Sprintf(`{"stream":"k","msg":"p%d-%d"}`, i%2, i/2))
	}
	checkOrder(t, "a", a.Collect(n, 30*time.Second), 2, n/2)
	checkOrder(t, "b", b.Collect(n, 30*time.Second), 2, n/2)
	// The dead peer's sender keeps retrying with backoff, counted, not blocking.
	resp, err := http.Get(reps[0].InternalURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("metrics: %s", resp.Status)
	}
}
