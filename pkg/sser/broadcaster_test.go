package sser

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sser-dev/sser/pkg/peerfinder"
)

// fakePeer records the batches POSTed to it. answer decides each status;
// gate, when set, holds every request until it is closed.
type fakePeer struct {
	mu      sync.Mutex
	batches [][]Event
	calls   int
	answer  func(call int) int
	gate    chan struct{}
	srv     *httptest.Server
}

func newFakePeer(t *testing.T) *fakePeer {
	t.Helper()
	p := &fakePeer{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		gate := p.gate
		p.mu.Unlock()
		if gate != nil {
			<-gate
		}
		var batch []Event
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil || r.URL.Path != PeerEndpointURLPath {
			http.Error(w, "bad batch", http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.calls++
		status := http.StatusOK
		if p.answer != nil {
			status = p.answer(p.calls)
		}
		if status == http.StatusOK {
			p.batches = append(p.batches, batch)
		}
		p.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *fakePeer) port() int { return p.srv.Listener.Addr().(*net.TCPAddr).Port }

// received is every delivered event's message, in order.
func (p *fakePeer) received() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, b := range p.batches {
		for _, e := range b {
			out = append(out, e.Msg)
		}
	}
	return out
}

func (p *fakePeer) batchCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.batches)
}

func newTestBroadcaster(t *testing.T, p *fakePeer, opts Options) (*broadcaster, *metrics) {
	t.Helper()
	pf, err := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1", "127.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	opts.PeerFinder = pf
	opts.setDefaults()
	opts.PeerBackoffMin, opts.PeerBackoffMax = time.Millisecond, 5*time.Millisecond
	m := newMetrics(nil)
	b := newBroadcaster(logr.Discard(), m, &opts, "127.0.0.9", p.port())
	b.setPeers(t.Context(), []string{"127.0.0.1", "127.0.0.9"}) // .9 is this replica
	t.Cleanup(b.stop)
	return b, m
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func msgs(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPeerSenderRetriesAndKeepsOrder(t *testing.T) {
	p := newFakePeer(t)
	p.answer = func(call int) int {
		if call <= 3 {
			return http.StatusServiceUnavailable // the peer is starting: retry
		}
		return http.StatusOK
	}
	b, m := newTestBroadcaster(t, p, Options{})
	for i := 1; i <= 50; i++ {
		b.enqueue(Event{Stream: "s", Msg: strconv.Itoa(i)})
	}
	waitUntil(t, "all 50 events", func() bool {
		return testutil.ToFloat64(m.peerEventsSent.WithLabelValues("127.0.0.1")) == 50
	})
	if got := p.received(); !equalStrings(got, msgs(1, 50)) {
		t.Fatalf("peer got %v", got)
	}
	if p.batchCount() >= 50 {
		t.Errorf("%d POSTs for 50 queued events: not batched", p.batchCount())
	}
	if n := testutil.ToFloat64(m.peerPostErrors.WithLabelValues("127.0.0.1")); n != 3 {
		t.Errorf("post errors = %v, want 3", n)
	}
}

func TestPeerQueueDropsOldestWhenFull(t *testing.T) {
	p := newFakePeer(t)
	gate := make(chan struct{})
	p.gate = gate
	b, m := newTestBroadcaster(t, p, Options{PeerQueue: 5, PeerBatch: 100})
	b.enqueue(Event{Stream: "s", Msg: "1"})
	// Event 1 is in flight (the peer holds the request); 2..21 queue behind it.
	waitUntil(t, "the first POST", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		s := b.senders["127.0.0.1"]
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.inflight == 1 && len(s.queue) == 0
	})
	for i := 2; i <= 21; i++ {
		b.enqueue(Event{Stream: "s", Msg: strconv.Itoa(i)})
	}
	if n := testutil.ToFloat64(m.peerQueueDropped.WithLabelValues("127.0.0.1")); n != 15 {
		t.Errorf("dropped = %v, want 15 (20 queued, room for 5)", n)
	}
	p.mu.Lock()
	p.gate = nil
	p.mu.Unlock()
	close(gate)
	waitUntil(t, "the newest five", func() bool { return len(p.received()) == 6 })
	if got := p.received(); !equalStrings(got, []string{"1", "17", "18", "19", "20", "21"}) {
		t.Fatalf("peer got %v, want 1 then the newest five", got)
	}
}

func TestPeerRejectingABatchDoesNotStopTheNext(t *testing.T) {
	p := newFakePeer(t)
	p.answer = func(call int) int {
		if call == 1 {
			return http.StatusBadRequest // permanent: dropped, counted, not retried
		}
		return http.StatusOK
	}
	b, m := newTestBroadcaster(t, p, Options{PeerBatch: 1})
	b.enqueue(Event{Stream: "s", Msg: "rejected"})
	waitUntil(t, "the rejection", func() bool {
		return testutil.ToFloat64(m.peerQueueDropped.WithLabelValues("127.0.0.1")) == 1
	})
	b.enqueue(Event{Stream: "s", Msg: "next"})
	waitUntil(t, "the next batch", func() bool { return len(p.received()) == 1 })
	if got := p.received(); got[0] != "next" {
		t.Fatalf("peer got %v", got)
	}
}

func TestPeerLeavingStopsItsSender(t *testing.T) {
	p := newFakePeer(t)
	p.answer = func(int) int { return http.StatusServiceUnavailable }
	b, m := newTestBroadcaster(t, p, Options{})
	b.enqueue(Event{Stream: "s", Msg: "never"})
	waitUntil(t, "a failed POST", func() bool {
		return testutil.ToFloat64(m.peerPostErrors.WithLabelValues("127.0.0.1")) >= 1
	})
	b.setPeers(t.Context(), []string{"127.0.0.9"})
	b.mu.Lock()
	n := len(b.senders)
	b.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d senders after the peer left", n)
	}
	if got := testutil.ToFloat64(m.peers); got != 1 {
		t.Errorf("sser_peers = %v, want 1", got)
	}
	// The departed peer's series are gone from /metrics.
	if c, err := testutil.GatherAndCount(m.registry, "sser_peer_post_errors_total", "sser_peer_queue_length"); err != nil || c != 0 {
		t.Errorf("departed peer still has %d series (%v)", c, err)
	}
}
