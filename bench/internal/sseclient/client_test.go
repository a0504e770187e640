package sseclient

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

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
			var h, merged Histogram
			for _, s := range tc.samples {
				h.Record(s)
			}
			merged.Merge(&h)
			for _, got := range []float64{h.Quantile(tc.q), merged.Quantile(tc.q)} {
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
			n, rest, ok := CutInt([]byte(tc.in))
			if n != tc.want || string(rest) != tc.rest || ok != tc.ok {
				t.Fatalf("CutInt(%q) = %d, %q, %v; want %d, %q, %v", tc.in, n, rest, ok, tc.want, tc.rest, tc.ok)
			}
		})
	}
}

// TestClientCountsBySeq reads a canned stream: a warm-up, events out of
// order and repeated, a typed event whose data is not "<seq> <nanos>", and
// one beyond the tracked range.
func TestClientCountsBySeq(t *testing.T) {
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	body := "retry: 3000\n\nid: a.1\n\n" +
		"data: 0 " + now + " warm\n\n" +
		"data: 2 " + now + " x\n\n" +
		"event: sser-lost\ndata: {\"reason\":\"gap\"}\n\n" +
		"data: 1 " + now + " x\n\n" +
		"data: 2 " + now + " x\n\n" +
		"data: 9 " + now + " x\n\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	target, err := url.Parse(srv.URL + "/events?stream=bench")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	clients := make([]*Client, 1)
	if err := DialAll(t.Context(), []*url.URL{target}, clients, 1, &wg, Options{Track: 3}); err != nil {
		t.Fatal(err)
	}
	if err := PollUntil(t.Context(), 10*time.Second, func() bool { return CountDone(clients) == 1 }); err != nil {
		t.Fatal("the stream did not end:", err)
	}
	wg.Wait()
	c := clients[0]
	if !errors.Is(c.Err, io.EOF) {
		t.Fatalf("err = %v, want EOF", c.Err)
	}
	if !c.Ready.Load() || c.Got.Load() != 4 || c.Typed != 1 || c.Beyond != 1 || c.OutOfOrder != 1 {
		t.Fatalf("ready %v, got %d, typed %d, beyond %d, out of order %d; want true, 4, 1, 1, 1",
			c.Ready.Load(), c.Got.Load(), c.Typed, c.Beyond, c.OutOfOrder)
	}
	for seq, want := range []int{0, 1, 2, 0} {
		if got := c.Seen(seq); got != want {
			t.Errorf("Seen(%d) = %d, want %d", seq, got, want)
		}
	}
	if c.Hist.N() != 4 {
		t.Errorf("%d latency samples, want 4", c.Hist.N())
	}
}

// TestClientResumes sends each client's Last-Event-ID and keeps the last id
// it saw, for the reconnect storm.
func TestClientResumes(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "id: x.1\n\nid: x.2\ndata: 0 1 warm\n\n")
	}))
	defer srv.Close()
	target, err := url.Parse(srv.URL + "/events?stream=bench")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	clients := make([]*Client, 2)
	if err := DialAll(t.Context(), []*url.URL{target}, clients, 1, &wg, Options{LastEventIDs: []string{"a.7", ""}}); err != nil {
		t.Fatal(err)
	}
	if err := PollUntil(t.Context(), 10*time.Second, func() bool { return CountDone(clients) == 2 }); err != nil {
		t.Fatal("the streams did not end:", err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(asked)
	if len(asked) != 2 || asked[0] != "" || asked[1] != "a.7" {
		t.Errorf("Last-Event-ID headers %q, want a.7 and none", asked)
	}
	for i, c := range clients {
		if c.LastID() != "x.2" {
			t.Errorf("client %d: last id %q, want x.2", i, c.LastID())
		}
	}
}
