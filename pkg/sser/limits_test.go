package sser

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sser-dev/sser/internal/ssetest"
)

// A client that missed more than one resume may replay gets the oldest part,
// then the connection ends; resuming from its last id pages through the
// rest, each event exactly once.
func TestReplayIsBoundedAndPagesThroughReconnects(t *testing.T) {
	ts := startServer(t, Options{MaxReplayEvents: 10, HistorySize: 100})
	if err := ts.Send(t.Context(), "other", "0"); err != nil {
		t.Fatal(err)
	}
	sub := ssetest.Dial(t, ts.url("stream=p"), "")
	id := sub.WaitID(t, 5*time.Second)
	sub.Close()
	for i := 1; i <= 35; i++ {
		if err := ts.Send(t.Context(), "p", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for page := 0; page < 5 && len(got) < 35; page++ {
		again := ssetest.Dial(t, ts.url("stream=p"), id)
		want := min(10, 35-len(got))
		evs := again.Collect(want, 5*time.Second)
		for _, e := range evs {
			got = append(got, e.Data)
		}
		partial := again.Resp.Header.Get("X-Sser-Replay") == "partial"
		if partial {
			select {
			case <-again.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("a partial replay did not end the connection")
			}
		}
		if len(evs) > 0 {
			id = evs[len(evs)-1].ID
		}
		again.Close()
	}
	if strings.Join(got, ",") != strings.Join(msgs(1, 35), ",") {
		t.Fatalf("paged replay gave %v, want 1..35 once each", got)
	}
}

// A resume point naming origins this replica never heard of neither
// inflates the ids it writes nor replays more than the real part lacks.
func TestInventedOriginsInAResumePointAreIgnored(t *testing.T) {
	ts := startServer(t, Options{})
	sub := ssetest.Dial(t, ts.url("stream=i"), "")
	for i := 1; i <= 3; i++ {
		if err := ts.Send(t.Context(), "i", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	evs := sub.Collect(3, 5*time.Second)
	real := evs[1].ID // has 1 and 2
	sub.Close()
	var parts []string
	for i := range 1000 {
		parts = append(parts, fmt.Sprintf("a%04d.1", i))
	}
	parts = append(parts, real)
	sortPositionText(parts)
	forged := strings.Join(parts, "-")
	again := ssetest.Dial(t, ts.url("stream=i"), forged)
	got := again.Next(t, 5*time.Second)
	if got.Data != "3" {
		t.Fatalf("replayed %q first, want 3 (the only event the real part lacks)", got.Data)
	}
	if err := ts.Send(t.Context(), "i", "4"); err != nil {
		t.Fatal(err)
	}
	live := again.Next(t, 5*time.Second)
	if live.Data != "4" || len(live.ID) > len(ts.hub.pos.String())+4*16 {
		t.Errorf("live event %q with a %d-byte id; this replica writes %d bytes", live.Data, len(live.ID), len(ts.hub.pos.String()))
	}
}

// sortPositionText sorts "origin.seq" elements by origin, as ids are written.
func sortPositionText(parts []string) {
	for i := 1; i < len(parts); i++ {
		for j := i; j > 0 && strings.SplitN(parts[j], ".", 2)[0] < strings.SplitN(parts[j-1], ".", 2)[0]; j-- {
			parts[j], parts[j-1] = parts[j-1], parts[j]
		}
	}
}

func TestStreamsPerConnectionAreCapped(t *testing.T) {
	ts := startServer(t, Options{MaxStreamsPerConnection: 3})
	q := "stream=a&stream=b&stream=c&stream=d"
	resp, err := http.Get(ts.url(q))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("4 streams with a cap of 3: %d, want 400", resp.StatusCode)
	}
	if err := ts.Send(t.Context(), "a", "0"); err != nil {
		t.Fatal(err)
	}
	sub := ssetest.Dial(t, ts.url("stream=a&stream=b&stream=c"), "")
	sub.WaitID(t, 5*time.Second)
}

// History is bounded in streams and bytes across streams, oldest first, and
// streams whose history went and that nobody reads are forgotten.
func TestHistoryBoundedInStreamsAndBytes(t *testing.T) {
	h := newHub(testLogger(t), newMetrics(nil), 1000, time.Hour)
	h.hist.maxStreams = 10
	for i := range 100 {
		h.apply([]Event{{Stream: "s" + strconv.Itoa(i), Msg: "x", Origin: "o", Seq: uint64(i + 1)}}, "peer")
	}
	if h.hist.streams != 10 || len(h.streams) != 10 || h.hist.len() != 10 {
		t.Errorf("%d streams hold history, %d known, %d events; want 10 each", h.hist.streams, len(h.streams), h.hist.len())
	}
	if _, ok := h.streams["s99"]; !ok {
		t.Error("the newest stream was evicted instead of the oldest")
	}
	h.hist.maxBytes = 20 * (&histEntry{frame: make([]byte, 60), ev: Event{Msg: strings.Repeat("y", 10)}}).size()
	for i := range 100 {
		h.apply([]Event{{Stream: "b", Msg: strings.Repeat("y", 10), Origin: "o", Seq: uint64(101 + i)}}, "peer")
	}
	if h.hist.bytes > h.hist.maxBytes {
		t.Errorf("history holds %d bytes, bound %d", h.hist.bytes, h.hist.maxBytes)
	}
}

func getStatus(t *testing.T, u string, hdr map[string]string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// Each connection cap refuses with its status and a Retry-After, counts
// it, and a spoofed X-Forwarded-For from an untrusted address changes
// nothing; other subscribers keep receiving.
func TestConnectionCaps(t *testing.T) {
	tests := []struct {
		name   string
		opts   Options
		hdr    func(i int) map[string]string
		open   int // subscriptions that must be accepted
		status int
		limit  string
	}{
		{"per replica", Options{MaxConnections: 3}, nil, 3, http.StatusServiceUnavailable, "connections"},
		{"per IP", Options{MaxConnectionsPerIP: 2}, nil, 2, http.StatusTooManyRequests, "connections_per_ip"},
		{"per IP, spoofed X-Forwarded-For from an untrusted address", Options{MaxConnectionsPerIP: 2},
			func(i int) map[string]string {
				return map[string]string{"X-Forwarded-For": fmt.Sprintf("10.0.0.%d", i)}
			},
			2, http.StatusTooManyRequests, "connections_per_ip"},
		{"per client behind a trusted proxy", Options{MaxConnectionsPerIP: 2, TrustedProxies: []string{"127.0.0.0/8"}},
			func(i int) map[string]string { return map[string]string{"X-Forwarded-For": "192.0.2.7, 127.0.0.5"} },
			2, http.StatusTooManyRequests, "connections_per_ip"},
		{"connection rate", Options{ConnectionRate: 2}, nil, 2, http.StatusServiceUnavailable, "connection_rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.opts)
			if err := ts.Send(t.Context(), "c", "0"); err != nil {
				t.Fatal(err)
			}
			var subs []*ssetest.Sub
			for i := range tt.open {
				var hdr map[string]string
				if tt.hdr != nil {
					hdr = tt.hdr(i)
				}
				sub := dialWith(t, ts.url("stream=c"), hdr)
				subs = append(subs, sub)
			}
			var hdr map[string]string
			if tt.hdr != nil {
				hdr = tt.hdr(99)
			}
			status, h := getStatus(t, ts.url("stream=c"), hdr)
			if status != tt.status || h.Get("Retry-After") == "" {
				t.Errorf("subscription over the cap: %d, Retry-After %q; want %d with Retry-After", status, h.Get("Retry-After"), tt.status)
			}
			if n := testutil.ToFloat64(ts.m.refused.WithLabelValues(tt.limit)); n < 1 {
				t.Errorf("sser_refused_total{limit=%q} = %v", tt.limit, n)
			}
			if err := ts.Send(t.Context(), "c", "still"); err != nil {
				t.Fatal(err)
			}
			for _, sub := range subs {
				if got := sub.Next(t, 5*time.Second); got.Data != "still" {
					t.Errorf("an accepted subscriber got %q", got.Data)
				}
			}
		})
	}
}

func dialWith(t *testing.T, u string, hdr map[string]string) *ssetest.Sub {
	t.Helper()
	if len(hdr) == 0 {
		sub := ssetest.Dial(t, u, "")
		sub.WaitID(t, 5*time.Second)
		return sub
	}
	sub, err := ssetest.ConnectHeaders(t.Context(), u, "", hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	sub.WaitID(t, 5*time.Second)
	return sub
}

func TestCORSNeverPairsAnyOriginWithCredentials(t *testing.T) {
	ts := startServer(t, Options{CORSOrigins: []string{"*", "https://app.example"}})
	for _, tt := range []struct {
		origin, allow, creds string
	}{
		{"https://app.example", "https://app.example", "true"},
		{"https://evil.example", "*", ""},
		{"null", "*", ""},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodOptions, ts.url("stream=c"), nil)
		req.Header.Set("Origin", tt.origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if a, c := resp.Header.Get("Access-Control-Allow-Origin"), resp.Header.Get("Access-Control-Allow-Credentials"); a != tt.allow || c != tt.creds {
			t.Errorf("Origin %s: Allow-Origin %q, Allow-Credentials %q; want %q, %q", tt.origin, a, c, tt.allow, tt.creds)
		}
	}
}

func TestMalformedQueryIsSaidSo(t *testing.T) {
	ts := startServer(t, Options{})
	resp, err := http.Get(ts.front.URL + "/?stream=a&%zz")
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 512)
	n, _ := resp.Body.Read(body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body[:n]), "malformed query") {
		t.Errorf("%d %s; want 400 saying the query is malformed", resp.StatusCode, body[:n])
	}
}

func TestPublishRateAndMemoryWatermark(t *testing.T) {
	ts := startServer(t, Options{PublishRate: 5})
	post := func(body string) (int, string) {
		resp, _ := ts.post(t, PublishURLPath, "application/json", body)
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if st, _ := post(`[{"stream":"r","msg":"1"},{"stream":"r","msg":"2"},{"stream":"r","msg":"3"},{"stream":"r","msg":"4"},{"stream":"r","msg":"5"}]`); st != 200 {
		t.Fatalf("a burst within the rate: %d", st)
	}
	if st, ra := post(`{"stream":"r","msg":"6"}`); st != http.StatusTooManyRequests || ra == "" {
		t.Errorf("over the publish rate: %d, Retry-After %q; want 429 with Retry-After", st, ra)
	}

	shed := startServer(t, Options{MemoryWatermark: 1})
	waitUntil(t, "the memory guard to trip", func() bool { return shed.memory.over.Load() })
	resp, _ := shed.post(t, PublishURLPath, "application/json", `{"stream":"r","msg":"x"}`)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("publish above the watermark: %d, want 503", resp.StatusCode)
	}
	if st, _ := getStatus(t, shed.url("stream=r"), nil); st != http.StatusServiceUnavailable {
		t.Errorf("subscribe above the watermark: %d, want 503", st)
	}
}

// A client that resumes from before history gets what is held, is told of
// the rest, and holds ids that do not claim the events it never got, so a
// replica that still has them would give them.
func TestResumeBeyondHistoryLeavesAHoleInTheID(t *testing.T) {
	ts := startServer(t, Options{HistorySize: 10})
	sub := ssetest.Dial(t, ts.url("stream=h"), "")
	for i := 1; i <= 5; i++ {
		if err := ts.Send(t.Context(), "h", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	got := sub.Collect(5, 5*time.Second)
	from := got[4].ID
	sub.Close()
	for i := 6; i <= 35; i++ {
		if err := ts.Send(t.Context(), "h", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	again := ssetest.Dial(t, ts.url("stream=h"), from)
	evs := again.Collect(11, 5*time.Second) // 26..35 and the sser-lost notice
	if again.Resp.Header.Get("X-Sser-Resume") != "lost" || len(evs) != 11 || evs[10].Event != LostEventType {
		t.Fatalf("resume from %s: header %q, %d events", from, again.Resp.Header.Get("X-Sser-Resume"), len(evs))
	}
	if err := ts.Send(t.Context(), "h", "36"); err != nil {
		t.Fatal(err)
	}
	live := again.Next(t, 5*time.Second)
	origin := ts.Origin()
	for _, id := range []string{evs[0].ID, evs[9].ID, live.ID, again.LastID()} {
		for _, seq := range []uint64{6, 15, 25} {
			if covers, err := IDCovers(id, origin, seq); err != nil || covers {
				t.Errorf("id %q claims seq %d, which the client never got (%v)", id, seq, err)
			}
		}
		if covers, _ := IDCovers(id, origin, 5); !covers {
			t.Errorf("id %q does not claim seq 5, which the client had", id)
		}
	}
	if covers, _ := IDCovers(live.ID, origin, 36); !covers {
		t.Errorf("live id %q does not claim the live event", live.ID)
	}
}

// Strict edges of the internal API: the auth scheme is case-insensitive,
// guessing is throttled per address, a body must say it is JSON, and an
// unclean path is a 404, not a redirect a client re-sends as GET.
func TestInternalEdges(t *testing.T) {
	ts := startServer(t, Options{PublishToken: "pub", PeerToken: "peer"})
	do := func(method, path, auth, ct, body string) int {
		req, _ := http.NewRequestWithContext(t.Context(), method, ts.internal+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ev := `{"stream":"e","msg":"x"}`
	if st := do("POST", PublishURLPath, "bearer pub", "application/json", ev); st != 200 {
		t.Errorf("lower-case scheme: %d, want 200", st)
	}
	if st := do("POST", PublishURLPath, "Bearer pub", "", ev); st != http.StatusUnsupportedMediaType {
		t.Errorf("no Content-Type: %d, want 415", st)
	}
	if st := do("POST", PublishURLPath, "Bearer pub", "text/plain", ev); st != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %d, want 415", st)
	}
	if st := do("POST", "/api/json/v1//publish", "Bearer pub", "application/json", ev); st != http.StatusNotFound {
		t.Errorf("unclean path: %d, want 404 (no redirect)", st)
	}
	// Guessing: after a burst of wrong tokens the address is held off,
	// even with the right one, until it waits.
	refused := 0
	for range 40 {
		if st := do("POST", PublishURLPath, "Bearer guess", "application/json", ev); st == http.StatusTooManyRequests {
			refused++
		}
	}
	if refused == 0 {
		t.Error("40 wrong tokens in a row were never throttled")
	}
	if st := do("POST", PublishURLPath, "Bearer pub", "application/json", ev); st != http.StatusTooManyRequests {
		t.Errorf("right token right after a guessing burst: %d, want 429 until the address waits", st)
	}
	if n := testutil.ToFloat64(ts.m.refused.WithLabelValues("credential_failures")); n == 0 {
		t.Error("throttled guesses not counted")
	}
}
