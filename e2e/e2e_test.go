package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Three replicas, three publishers at once, one subscriber per replica:
// every subscriber gets all 1,000 events, in order per publisher, none
// missing or twice.
func TestFanOutThreeReplicas(t *testing.T) {
	c := newCluster(t, "fanout", 1, 3)
	rs := c.start(3)
	subs := subscribe(t, rs)

	counts := map[string]int{"a": 334, "b": 333, "c": 333}
	start := time.Now()
	publishAll(t, rs, counts)
	published := time.Since(start)
	for i, sub := range subs {
		expectEvents(t, rs[i].pod, sub, counts)
	}
	t.Logf("1000 events from 3 publishers: published in %s, all received on 3 replicas in %s",
		published.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// A fourth pod appears and is marked Running: once every replica reports
// four peers, events published anywhere reach the new replica's subscribers,
// and the new replica's events reach the others.
func TestScaleUp(t *testing.T) {
	c := newCluster(t, "scale-up", 2, 4)
	rs := c.start(3)
	start := time.Now()
	rs = append(rs, c.addReplica(3))
	waitPeers(t, rs, 4)
	t.Logf("fourth replica ready and seen by all in %s", time.Since(start).Round(time.Millisecond))

	subs := subscribe(t, rs)
	counts := map[string]int{"a": 50, "b": 50, "c": 50, "d": 50}
	publishAll(t, rs, counts)
	for i, sub := range subs {
		expectEvents(t, rs[i].pod, sub, counts)
	}
}

// A pod is deleted and its process stopped: the others drop it from their
// peer set and metrics, keep delivering to each other, and log nothing more
// about it.
func TestScaleDown(t *testing.T) {
	c := newCluster(t, "scale-down", 3, 4)
	rs := c.start(4)
	gone, rest := rs[3], rs[:3]

	start := time.Now()
	c.deletePod(gone.pod)
	if err := gone.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", gone.pod, err)
	}
	waitPeers(t, rest, 3)
	peerLabel := `peer="` + gone.ip + `"`
	for _, r := range rest {
		pollUntil(t, r.pod+" to forget the metrics of "+gone.ip, func() bool {
			return !strings.Contains(metrics(t, r), peerLabel)
		})
	}
	t.Logf("departed peer gone from every replica's set and metrics in %s", time.Since(start).Round(time.Millisecond))
	ctx := t.Context()
	if err := gone.Wait(ctx); err != nil {
		t.Errorf("%s did not exit cleanly on SIGTERM: %v", gone.pod, err)
	}

	logsBefore := make([]int, len(rest))
	for i, r := range rest {
		logsBefore[i] = len(r.Logs())
	}
	subs := subscribe(t, rest)
	counts := map[string]int{"a": 100, "b": 100, "c": 100}
	publishAll(t, rest, counts)
	for i, sub := range subs {
		expectEvents(t, rest[i].pod, sub, counts)
	}
	for i, r := range rest {
		if later := r.Logs()[logsBefore[i]:]; strings.Contains(later, gone.ip) {
			t.Errorf("%s still logs about %s after it left:\n%s", r.pod, gone.ip, later)
		}
		if strings.Contains(metrics(t, r), peerLabel) {
			t.Errorf("%s has metrics for %s again", r.pod, gone.ip)
		}
	}
}

// A replica is killed with SIGKILL while its pod still says Running (no
// kubelet notices): the others keep delivering among themselves at once.
// When the pod is then marked Failed, it leaves their peer set.
func TestKilledReplica(t *testing.T) {
	c := newCluster(t, "killed", 4, 3)
	rs := c.start(3)
	dead, alive := rs[2], rs[:2]
	subs := subscribe(t, alive)

	if err := dead.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", dead.pod, err)
	}
	start := time.Now()
	counts := map[string]int{"a": 100, "b": 100}
	publishAll(t, alive, counts)
	for i, sub := range subs {
		expectEvents(t, alive[i].pod, sub, counts)
	}
	t.Logf("with a dead peer still in the set, 200 events delivered between the other two in %s", time.Since(start).Round(time.Millisecond))
	for _, r := range alive {
		if v, _ := metric(t, r, "sser_peers"); v != 3 {
			t.Errorf("%s reports %v peers while the dead pod is still Running, want 3", r.pod, v)
		}
	}

	c.setPodStatus(dead.pod, corev1.PodFailed, "")
	waitPeers(t, alive, 2)
	counts = map[string]int{"c": 50, "d": 50}
	publishAll(t, alive, counts)
	for i, sub := range subs {
		expectEvents(t, alive[i].pod, sub, counts)
	}
}

// Bad input to a running replica's internal port gets a JSON 4xx, reaches
// no subscriber anywhere, and the replica keeps serving.
func TestBadInput(t *testing.T) {
	c := newCluster(t, "bad-input", 5, 3)
	rs := c.start(3)
	target := rs[0]
	subs := subscribe(t, rs)

	tooBig := `{"stream":"` + stream + `","msg":"` + strings.Repeat("x", 2<<20) + `"}`
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantStatus  int
	}{
		{"malformed JSON", http.MethodPost, "/api/json/v1/publish", "application/json", `{"stream":"e2e","msg":`, http.StatusBadRequest},
		{"not an event", http.MethodPost, "/api/json/v1/publish", "application/json", `"hello"`, http.StatusBadRequest},
		{"wrong method", http.MethodGet, "/api/json/v1/publish", "", "", http.StatusMethodNotAllowed},
		{"wrong method on send", http.MethodPut, "/api/json/v1/send", "application/json", `{"stream":"e2e","msg":"x"}`, http.StatusMethodNotAllowed},
		{"oversized body", http.MethodPost, "/api/json/v1/publish", "application/json", tooBig, http.StatusRequestEntityTooLarge},
		{"invalid stream name", http.MethodPost, "/api/json/v1/publish", "application/json", `{"stream":"bad name!","msg":"x"}`, http.StatusBadRequest},
		{"missing stream", http.MethodPost, "/api/json/v1/publish", "application/json", `{"msg":"x"}`, http.StatusBadRequest},
		{"empty message", http.MethodPost, "/api/json/v1/publish", "application/json", `{"stream":"e2e","msg":""}`, http.StatusBadRequest},
		{"batch with one bad event", http.MethodPost, "/api/json/v1/publish", "application/json", `[{"stream":"e2e","msg":"x"},{"stream":"bad name!","msg":"y"}]`, http.StatusBadRequest},
		{"bad event on peer send", http.MethodPost, "/api/json/v1/send", "application/json", `{"stream":"bad name!","msg":"x"}`, http.StatusBadRequest},
		{"wrong content type", http.MethodPost, "/api/json/v1/publish", "text/plain", `{"stream":"e2e","msg":"x"}`, http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, target.InternalURL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var answer struct {
				Error string `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || answer.Error == "" {
				t.Errorf("answer is not {\"error\": \"...\"}: %v %+v", err, answer)
			}
			if resp.StatusCode == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}

	// Nothing reached any subscriber: the first event each one sees is the
	// marker published after all the bad requests.
	expectNothingThen(t, target, subs, "marker")
	for _, r := range rs {
		r.WaitReady(t, deadline)
	}
	if v, ok := metric(t, target, "sser_peers"); !ok || v != 3 {
		t.Errorf("%s reports %v peers after bad input, want 3", target.pod, v)
	}
}
