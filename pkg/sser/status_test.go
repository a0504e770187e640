package sser

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/peerfinder"
)

// startWithDeadPeer runs a server on 127.0.0.1 whose static peer set also
// names deadIP, where nothing listens: its sender fails at once and keeps
// retrying.
func startWithDeadPeer(t *testing.T, deadIP string, opts Options) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	pf, err := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1", deadIP})
	if err != nil {
		t.Fatal(err)
	}
	opts.PeerFinder = pf
	opts.InternalAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	opts.PeerBackoffMin, opts.PeerBackoffMax = 10*time.Millisecond, 50*time.Millisecond
	opts.WarmUpTimeout = -1 // nothing to copy from a peer that is not there
	return startServer(t, opts)
}

func fetchStatus(t *testing.T, ts *testServer) (Status, map[string]any) {
	t.Helper()
	resp, err := http.Get(ts.internal + StatusURLPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %s %q: %s", StatusURLPath, resp.Status, resp.Header.Get("Content-Type"), body)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("status is not JSON: %v: %s", err, body)
	}
	var raw map[string]any
	_ = json.Unmarshal(body, &raw)
	return st, raw
}

// The status JSON says what the replica holds: subscribers per stream,
// events published, history, the outbox, and a peer that cannot be
// reached turning down with its error.
func TestStatusJSONAgainstAKnownState(t *testing.T) {
	const dead = "127.0.0.9"
	ts := startWithDeadPeer(t, dead, Options{})
	ctx := t.Context()
	for range 2 {
		ssetest.Dial(t, ts.url("stream=a"), "")
	}
	multi := ssetest.Dial(t, ts.url("stream=a&stream=b"), "")
	for i := range 5 {
		if err := ts.Send(ctx, "a", "a"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ts.Publish(ctx, Event{Stream: "b", Msg: "b0", Event: "tick"}, Event{Stream: "b", Msg: "b1"}); err != nil {
		t.Fatal(err)
	}
	got := multi.Collect(7, 5*time.Second)
	if len(got) != 7 {
		t.Fatalf("the subscriber of a and b got %d events, want 7", len(got))
	}
	// A resume with the id of the third event gets the four after it.
	resumed := ssetest.Dial(t, ts.url("stream=a&stream=b"), got[2].ID)
	if evs := resumed.Collect(4, 5*time.Second); len(evs) != 4 {
		t.Fatalf("resume replayed %d events, want 4", len(evs))
	}

	var st Status
	var raw map[string]any
	testproc.Eventually(t, 10*time.Second, "the dead peer to count as down", func() bool {
		st, raw = fetchStatus(t, ts)
		return len(st.Peers) == 1 && st.Peers[0].State == "down"
	}, func() string { return fmt.Sprintf("%+v", st.Peers) })

	for _, key := range []string{"time", "replica", "peers", "connections", "rates", "history", "outbox", "counters", "samples"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("status has no %q: %v", key, raw)
		}
	}
	r := st.Replica
	if r.Origin != ts.Origin() || r.PodIP != "127.0.0.1" || r.InternalAddr != ts.InternalAddr() || r.State != "ready" ||
		len(r.Failing) != 0 || r.Version == "" || r.GoVersion == "" || r.UptimeSeconds <= 0 || r.StartedAt.IsZero() {
		t.Errorf("replica = %+v", r)
	}
	p := st.Peers[0]
	if p.Address != dead || p.DownSince == nil || p.LastError == "" || p.LastErrorAt == nil || p.Errors < peerDownAfter {
		t.Errorf("dead peer = %+v", p)
	}
	if !strings.Contains(p.LastError, "connect") && !strings.Contains(p.LastError, "refused") {
		t.Errorf("dead peer's last error %q does not say why", p.LastError)
	}
	// It acknowledged nothing of the 7 events.
	if p.Queue != 7 || p.EventsSent != 0 || p.CutOff {
		t.Errorf("dead peer queue %d, sent %v, cut off %v; want 7, 0, false", p.Queue, p.EventsSent, p.CutOff)
	}
	c := st.Connections
	wantTop := []StreamConnections{{"a", 4}, {"b", 2}}
	if c.Total != 4 || c.Streams != 2 || !slices.Equal(c.Top, wantTop) {
		t.Errorf("connections = %+v, want 4 on 2 streams, top %v", c, wantTop)
	}
	if h := st.History; h.Events != 7 || h.Streams != 2 || h.Bytes <= 0 || h.OldestAgeSeconds <= 0 || h.OldestAgeSeconds > 60 {
		t.Errorf("history = %+v, want 7 events on 2 streams", h)
	}
	if o := st.Outbox; o.Events != 7 || o.LastSeq != 7 || o.Bytes <= 0 {
		t.Errorf("outbox = %+v, want 7 events up to seq 7", o)
	}
	k := st.Counters
	if k.Published != 7 || k.Applied != 7 || k.ResumesExact != 1 || k.ResumesLost != 0 || k.OverflowDisconnects != 0 ||
		k.EventsLost != 0 || k.LostNotices != 0 {
		t.Errorf("counters = %+v", k)
	}
	if s := st.Samples; s.IntervalSeconds != statusSampleEvery.Seconds() || len(s.Times) != len(s.Publish) ||
		len(s.Times) != len(s.Delivery) || len(s.Times) != len(s.Connections) || len(s.Times) != len(s.Applied) {
		t.Errorf("samples not aligned: %+v", s)
	}
}

// A resume from before what history holds counts as lost and as a notice.
func TestStatusCountsLostResumes(t *testing.T) {
	ts := startServer(t, Options{HistorySize: 2})
	sub := ssetest.Dial(t, ts.url("stream=a"), "")
	for i := range 4 {
		if err := ts.Send(t.Context(), "a", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	first := sub.Next(t, 5*time.Second)
	ssetest.Dial(t, ts.url("stream=a"), first.ID)
	testproc.Eventually(t, 5*time.Second, "a lost resume in the status", func() bool {
		st, _ := fetchStatus(t, ts)
		return st.Counters.ResumesLost == 1 && st.Counters.LostNotices == 1
	})
}

// The sampler turns counters into rates, keeps five minutes of them
// oldest first, and a peer's lag grows while its cursor stands still.
func TestStatusSamples(t *testing.T) {
	pf, _ := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
	s, err := NewWithOptions(Options{PeerFinder: pf})
	if err != nil {
		t.Fatal(err)
	}
	t0 := s.status.started
	s.m.eventsPublished.Add(10)
	s.m.framesQueued.Add(40)
	s.m.connections.Set(3)
	s.status.sample(t0.Add(2 * time.Second))
	st := s.status.compute(t0.Add(2 * time.Second))
	if st.Rates != (RateStatus{Publish: 5, Applied: 0, Delivery: 20}) {
		t.Errorf("rates = %+v, want publish 5, delivery 20", st.Rates)
	}
	if got := st.Samples.Connections; !slices.Equal(got, []int{3}) {
		t.Errorf("connections samples = %v", got)
	}
	for i := range statusSampleCount + 5 {
		s.m.connections.Set(float64(i))
		s.status.sample(t0.Add(time.Duration(4+2*i) * time.Second))
	}
	st = s.status.compute(t0.Add(time.Hour))
	c := st.Samples.Connections
	if len(c) != statusSampleCount || c[0] != 5 || c[len(c)-1] != statusSampleCount+4 || !slices.IsSorted(st.Samples.Times) {
		t.Errorf("after wrapping: %d samples, first %d, last %d, times sorted %v", len(c), c[0], c[len(c)-1], slices.IsSorted(st.Samples.Times))
	}
	if st.Rates.Publish != 0 {
		t.Errorf("publish rate %v with no publishes since the last sample", st.Rates.Publish)
	}

	// A peer whose acknowledgements stand still while events wait lags
	// from when that was first seen; moving on or catching up resets it.
	tr := s.status
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	peer := func(acked, lag uint64) []peerSnapshot {
		return []peerSnapshot{{addr: "10.0.0.2", cursor: outboxCursor{acked: acked, lag: lag}}}
	}
	lagAt := func(sec int) float64 {
		if m, ok := tr.marks["10.0.0.2"]; ok {
			return at(sec).Sub(m.since).Seconds()
		}
		return 0
	}
	steps := []struct {
		sec        int
		acked, lag uint64
		want       float64
	}{
		{0, 5, 0, 0}, {1, 5, 3, 0}, {4, 5, 7, 3}, {6, 9, 3, 0}, {9, 9, 3, 3}, {10, 12, 0, 0},
	}
	for _, st := range steps {
		tr.markLagsLocked(at(st.sec), peer(st.acked, st.lag))
		if got := lagAt(st.sec); got != st.want {
			t.Errorf("at %ds (acked %d, lag %d): lag %vs, want %vs", st.sec, st.acked, st.lag, got, st.want)
		}
	}
}

// The status stream sends a snapshot a second, outlives the internal
// read timeout, and ends when the replica drains; while it drains, a new
// one gets one snapshot and ends.
func TestStatusEvents(t *testing.T) {
	ts := startServer(t, Options{InternalReadTimeout: 300 * time.Millisecond})
	url := ts.internal + StatusEventsURLPath
	sub := ssetest.Dial(t, url, "")
	start := time.Now()
	for i := range 3 {
		ev := sub.Next(t, 5*time.Second)
		var st Status
		if err := json.Unmarshal([]byte(ev.Data), &st); err != nil || st.Replica.Origin != ts.Origin() {
			t.Fatalf("snapshot %d: %v: %s", i, err, ev.Data)
		}
	}
	if took := time.Since(start); took < 3*300*time.Millisecond {
		t.Fatalf("3 snapshots within %s: the stream does not pace itself", took)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		ts.Drain(context.WithoutCancel(t.Context()), 200*time.Millisecond)
	}()
	select {
	case <-sub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the status stream did not end when the replica drained")
	}
	<-drained
	again := ssetest.Dial(t, url, "")
	ev := again.Next(t, 5*time.Second)
	if !strings.Contains(ev.Data, `"state":"draining"`) {
		t.Errorf("snapshot while draining: %s", ev.Data)
	}
	select {
	case <-again.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a status stream opened while draining did not end")
	}
}

// Status streams are capped; past the cap, 429 with Retry-After.
func TestStatusEventsCapped(t *testing.T) {
	ts := startServer(t, Options{})
	url := ts.internal + StatusEventsURLPath
	for range maxStatusStreams {
		ssetest.Dial(t, url, "")
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"error"`) {
		t.Errorf("stream past the cap: %s, Retry-After %q, %s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
}

// The page is self-contained: its one script and one style are allowed by
// hash and nothing else runs or loads.
func TestStatusPage(t *testing.T) {
	ts := startServer(t, Options{})
	resp, err := http.Get(ts.internal + StatusPagePath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /status: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	page := string(body)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		parts := regexp.MustCompile(`(?s)<`+tag+`[^>]*>(.*?)</`+tag+`>`).FindAllStringSubmatch(page, -1)
		if len(parts) != 1 {
			t.Fatalf("%d <%s> elements, want 1", len(parts), tag)
		}
		sum := sha256.Sum256([]byte(parts[0][1]))
		if want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q is not strict", csp)
	}
	if regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).MatchString(page) {
		t.Error("the page loads something from elsewhere")
	}
	for _, attr := range []string{"dataset.peer", "dataset.state"} {
		if !strings.Contains(page, attr) {
			t.Errorf("the page sets no %s", attr)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.internal+StatusURLPath, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST status: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}
}

// The top list keeps the streams with the most subscribers, ties by name.
func TestStatusTopStreams(t *testing.T) {
	h := newHub(logr.Discard(), newMetrics(nil), 10, time.Minute)
	for i, n := range []int{1, 5, 3, 5, 0, 2} {
		ss := newStreamState("s" + strconv.Itoa(i))
		for range n {
			ss.subs[newSubscriber([]string{ss.name}, 1)] = struct{}{}
		}
		h.streams[ss.name] = ss
	}
	c := h.statusCounts(3, true)
	want := []StreamConnections{{"s1", 5}, {"s3", 5}, {"s2", 3}}
	if c.streams != 5 || !slices.Equal(c.top, want) {
		t.Errorf("streams %d, top %v; want 5, %v", c.streams, c.top, want)
	}
}

// Subscribers per stream take a walk over every stream under the hub's
// lock: they are counted again at most every statusTopEvery, while the
// total is always current.
func TestStatusTopCountedAtMostEvery5s(t *testing.T) {
	pf, _ := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
	s, err := NewWithOptions(Options{PeerFinder: pf})
	if err != nil {
		t.Fatal(err)
	}
	subscribe := func(stream string, n int) {
		ss := s.hub.streams[stream]
		if ss == nil {
			ss = newStreamState(stream)
			s.hub.streams[stream] = ss
		}
		for range n {
			sub := newSubscriber([]string{stream}, 1)
			ss.subs[sub] = struct{}{}
			s.hub.subs[sub] = struct{}{}
		}
	}
	t0 := s.status.started
	subscribe("a", 2)
	steps := []struct {
		at    time.Duration
		add   int // subscribers of b added before
		total int
		top   []StreamConnections
	}{
		{0, 0, 2, []StreamConnections{{"a", 2}}},
		{time.Second, 3, 5, []StreamConnections{{"a", 2}}},
		{statusTopEvery, 0, 5, []StreamConnections{{"b", 3}, {"a", 2}}},
	}
	for _, st := range steps {
		subscribe("b", st.add)
		c := s.status.compute(t0.Add(st.at)).Connections
		if c.Total != st.total || !slices.Equal(c.Top, st.top) {
			t.Errorf("at %s: total %d, top %v; want %d, %v", st.at, c.Total, c.Top, st.total, st.top)
		}
	}
}
