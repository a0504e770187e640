package sser

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
)

// rawStream is a delivery stream opened by hand, from a chosen address.
type rawStream struct {
	pw   *io.PipeWriter
	resp *http.Response
	br   *bufio.Reader
}

// openRawStream opens a delivery stream to base from ip, writing a
// keepalive first (the server answers once a line is in). It returns the
// response's status when it is not 200.
func openRawStream(t *testing.T, base, ip string) (*rawStream, int) {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+PeerEndpointURLPath, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Content-Type", streamContentType)
	go func() { _, _ = pw.Write(keepaliveLine) }()
	resp, err := peerHTTPClient(ip).Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		pw.Close()
		resp.Body.Close()
	})
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != streamContentType {
		t.Fatalf("stream answered with Content-Type %q", resp.Header.Get("Content-Type"))
	}
	return &rawStream{pw: pw, resp: resp, br: bufio.NewReader(resp.Body)}, resp.StatusCode
}

// write writes lines; a keepalive after them asks for the answers.
func (rs *rawStream) write(t *testing.T, lines ...string) {
	t.Helper()
	rs.writeOnly(t, append(lines, "{}")...)
}

func (rs *rawStream) writeOnly(t *testing.T, lines ...string) {
	t.Helper()
	if _, err := rs.pw.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		t.Fatalf("write to the stream: %v", err)
	}
}

// answer reads the next answer line; io.EOF when the stream has ended.
func (rs *rawStream) answer(t *testing.T) (map[string]any, error) {
	t.Helper()
	return rs.answerWithin(t, 10*time.Second)
}

func (rs *rawStream) answerWithin(t *testing.T, d time.Duration) (map[string]any, error) {
	t.Helper()
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := rs.br.ReadString('\n')
		ch <- res{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		var a map[string]any
		if err := json.Unmarshal([]byte(r.line), &a); err != nil {
			t.Fatalf("answer %q is not JSON: %v", r.line, err)
		}
		return a, nil
	case <-time.After(d):
		t.Fatalf("no answer within %s", d)
		return nil, nil
	}
}

func batchLine(t *testing.T, heldFrom uint64, events ...Event) string {
	t.Helper()
	b, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	l := `{"events":` + string(b)
	if heldFrom > 0 {
		l += `,"heldFrom":` + strconv.FormatUint(heldFrom, 10)
	}
	return l + "}"
}

func TestStreamRefusesBadLinesAndAppliesNothingOfThem(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2")
	s := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2", "127.0.0.9"},
		Options{WarmUpTimeout: -1, MaxBodyBytes: 2048, MaxBatchEvents: 3})
	ev := func(origin string, seq uint64, msg string) Event {
		return Event{Stream: "s", Msg: msg, Origin: origin, Seq: seq}
	}
	applied := func() float64 { return testutil.ToFloat64(s.m.eventsIn.WithLabelValues("peer")) }
	for _, tc := range []struct {
		name   string
		from   string
		good   []string // lines accepted first
		bad    string
		status float64
		reason string
	}{
		{"another origin", "127.0.0.9", []string{batchLine(t, 0, ev("oa", 1, "1"))}, batchLine(t, 0, ev("ob", 1, "x")), 400, "mixed_origins"},
		{"two origins in a line", "127.0.0.9", nil, batchLine(t, 0, ev("oc", 1, "x"), ev("od", 1, "y")), 400, "mixed_origins"},
		{"from a non-peer", "127.0.0.8", nil, batchLine(t, 0, ev("oe", 1, "x")), 403, "not_peer"},
		{"a line over MaxBodyBytes", "127.0.0.9", nil, batchLine(t, 0, ev("of", 1, strings.Repeat("x", 3000))), 413, ""},
		{"more events than MaxBatchEvents", "127.0.0.9", nil, batchLine(t, 0, ev("og", 1, "1"), ev("og", 2, "2"), ev("og", 3, "3"), ev("og", 4, "4")), 413, ""},
		{"malformed JSON", "127.0.0.9", nil, `{"events":[{"stream":"s","msg":`, 400, ""},
		{"an invalid event", "127.0.0.9", nil, `{"events":[{"stream":"bad name","msg":"x","origin":"oh","seq":1}]}`, 400, ""},
		{"a seq too far ahead", "127.0.0.9", []string{batchLine(t, 0, ev("oi", 1, "1"))}, batchLine(t, 0, ev("oi", 1<<40, "x")), 400, "seq_jump"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, status := openRawStream(t, s.internal, tc.from)
			if rs == nil {
				t.Fatalf("open: %d, want 200", status)
			}
			for _, l := range tc.good {
				rs.write(t, l)
				if a, err := rs.answer(t); err != nil || a["accepted"] != 1.0 {
					t.Fatalf("good line: %v %v, want accepted 1", a, err)
				}
			}
			before := applied()
			var refused float64
			if tc.reason != "" {
				refused = testutil.ToFloat64(s.m.peerRefused.WithLabelValues(tc.reason))
			}
			// A good line right behind the bad one is not applied either:
			// the stream ends at the refusal.
			follow := batchLine(t, 0, ev("oz", 1, "after"))
			rs.write(t, tc.bad, follow)
			a, err := rs.answer(t)
			if err != nil || a["status"] != tc.status || a["error"] == "" {
				t.Fatalf("bad line: %v %v, want an error line with status %v", a, err, tc.status)
			}
			if a, err := rs.answer(t); !errors.Is(err, io.EOF) {
				t.Fatalf("after the error line: %v %v, want the stream ended", a, err)
			}
			if got := applied(); got != before {
				t.Errorf("applied %v events from the bad line and after it", got-before)
			}
			if tc.reason != "" {
				if got := testutil.ToFloat64(s.m.peerRefused.WithLabelValues(tc.reason)); got != refused+1 {
					t.Errorf("sser_peer_events_refused_total{reason=%q} went %v -> %v, want +1", tc.reason, refused, got)
				}
			}
		})
	}
	for _, o := range s.hub.originInfos() {
		if o.Origin != "oa" && o.Origin != "oi" {
			t.Errorf("origin %s known after its lines were refused", o.Origin)
		}
	}
}

func TestStreamAnswersAreHeldUntilAskedFor(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2")
	s := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2", "127.0.0.9"}, Options{WarmUpTimeout: -1})
	ev := func(seq uint64) string { return batchLine(t, 0, Event{Stream: "s", Msg: "m", Origin: "oa", Seq: seq}) }
	// Held "forever": only a keepalive brings the answers.
	s.answerDelay.Store(int64(time.Hour))
	rs, status := openRawStream(t, s.internal, "127.0.0.9")
	if rs == nil {
		t.Fatalf("open: %d", status)
	}
	rs.writeOnly(t, ev(1), ev(2))
	testproc.Eventually(t, 10*time.Second, "both lines applied", func() bool {
		return testutil.ToFloat64(s.m.eventsIn.WithLabelValues("peer")) == 2
	})
	rs.writeOnly(t, "{}")
	for i := range 2 {
		// Well before streamAnswerDelay: the keepalive brought them.
		if a, err := rs.answerWithin(t, streamAnswerDelay/2); err != nil || a["accepted"] != 1.0 {
			t.Fatalf("answer %d after the keepalive: %v %v", i+1, a, err)
		}
	}
	// Not asked, answers go out after the delay.
	s.answerDelay.Store(int64(50 * time.Millisecond))
	rs2, status := openRawStream(t, s.internal, "127.0.0.9")
	if rs2 == nil {
		t.Fatalf("open: %d", status)
	}
	rs2.writeOnly(t, ev(3))
	if a, err := rs2.answerWithin(t, streamAnswerDelay/2); err != nil || a["accepted"] != 1.0 {
		t.Fatalf("answer after the delay: %v %v", a, err)
	}
}

// Answers written long after the last flush still go out: the write
// deadline is renewed for them, not left from that flush.
func TestStreamAnswersAfterAQuietSpell(t *testing.T) {
	const readTimeout = 200 * time.Millisecond
	_, port := testproc.FreePorts(t, "127.0.0.2")
	s := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2", "127.0.0.9"}, Options{WarmUpTimeout: -1, InternalReadTimeout: readTimeout})
	s.answerDelay.Store(int64(time.Hour))
	rs, status := openRawStream(t, s.internal, "127.0.0.9")
	if rs == nil {
		t.Fatalf("open: %d", status)
	}
	ev := func(seq uint64) string { return batchLine(t, 0, Event{Stream: "s", Msg: "m", Origin: "oa", Seq: seq}) }
	rs.write(t, ev(1))
	if a, err := rs.answer(t); err != nil || a["accepted"] != 1.0 {
		t.Fatalf("first answer: %v %v", a, err)
	}
	// Keepalives (nothing to flush) for several read timeouts.
	from := s.peerStreams.keepalives.Load()
	tick := time.NewTicker(readTimeout / 4)
	defer tick.Stop()
	for s.peerStreams.keepalives.Load() < from+12 {
		<-tick.C
		rs.writeOnly(t, "{}")
	}
	// More answers than the response buffer holds: writing them flushes.
	const n = 300
	lines := make([]string, 0, n)
	for i := range n {
		lines = append(lines, ev(uint64(i+2)))
	}
	rs.write(t, lines...)
	for i := range n {
		if a, err := rs.answer(t); err != nil || a["accepted"] != 1.0 {
			t.Fatalf("answer %d of %d after the quiet spell: %v %v", i+1, n, a, err)
		}
	}
}

func TestStreamsPerAddressAreCapped(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2")
	s := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2", "127.0.0.9"}, Options{WarmUpTimeout: -1})
	var open []*rawStream
	for i := range maxPeerStreamsPerIP {
		rs, status := openRawStream(t, s.internal, "127.0.0.9")
		if rs == nil {
			t.Fatalf("stream %d: %d, want 200", i+1, status)
		}
		open = append(open, rs)
	}
	if _, status := openRawStream(t, s.internal, "127.0.0.9"); status != http.StatusTooManyRequests {
		t.Fatalf("stream %d from one address: %d, want 429", maxPeerStreamsPerIP+1, status)
	}
	if n := testutil.ToFloat64(s.m.refused.WithLabelValues("peer_streams_per_ip")); n != 1 {
		t.Errorf(`sser_refused_total{limit="peer_streams_per_ip"} = %v, want 1`, n)
	}
	// Another address has its own streams.
	if rs, status := openRawStream(t, s.internal, "127.0.0.8"); rs == nil {
		t.Fatalf("a stream from another address: %d, want 200", status)
	}
	// A closed stream frees its place.
	open[0].pw.Close()
	testproc.Eventually(t, 10*time.Second, "a stream opens again once one closed", func() bool {
		rs, _ := openRawStream(t, s.internal, "127.0.0.9")
		return rs != nil
	})
}

func TestStreamsEndWhenTheServerStops(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2")
	s := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2", "127.0.0.9"}, Options{WarmUpTimeout: -1})
	rs, status := openRawStream(t, s.internal, "127.0.0.9")
	if rs == nil {
		t.Fatalf("open: %d", status)
	}
	rs.write(t, batchLine(t, 0, Event{Stream: "s", Msg: "1", Origin: "oa", Seq: 1}))
	if a, err := rs.answer(t); err != nil || a["accepted"] != 1.0 {
		t.Fatalf("%v %v", a, err)
	}
	start := time.Now()
	s.cancel()
	if a, err := rs.answer(t); err != nil || a["status"] != 503.0 {
		t.Errorf("on stop the stream got %v %v, want a 503 line", a, err)
	}
	if _, err := rs.answer(t); !errors.Is(err, io.EOF) {
		t.Errorf("after the 503 line: %v, want the stream ended", err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
	// http.Server.Shutdown would wait 5s for a stream left open.
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("stopping took %s with a delivery stream open", d)
	}
}

// Publishing one event at a time to a peer costs one stream, not one
// request per event.
func TestStreamRequestsPerEvent(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2", "127.0.0.3")
	peers := []string{"127.0.0.2", "127.0.0.3"}
	a := startPeer(t, "127.0.0.2", port, peers, Options{})
	b := startPeer(t, "127.0.0.3", port, peers, Options{})
	sub := ssetest.Dial(t, b.url("stream=r"), "")
	// a may have started before b listened: its stream is open once an
	// event got through.
	if err := a.Send(t.Context(), "r", "0"); err != nil {
		t.Fatal(err)
	}
	if e := sub.Next(t, 10*time.Second); e.Data != "0" {
		t.Fatalf("got %q", e.Data)
	}
	requests0 := testutil.ToFloat64(a.m.peerRequests.WithLabelValues("127.0.0.3"))
	batches0 := histogramCount(t, a, "127.0.0.3")
	const n = 1000
	for i := 1; i <= n; i++ {
		if err := a.Send(t.Context(), "r", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	got := sub.Collect(n, 60*time.Second)
	if len(got) != n {
		t.Fatalf("b's subscriber got %d events, want %d", len(got), n)
	}
	for i, e := range got {
		if e.Data != strconv.Itoa(i+1) {
			t.Fatalf("event %d is %q, want %d: order or loss", i, e.Data, i+1)
		}
	}
	requests := testutil.ToFloat64(a.m.peerRequests.WithLabelValues("127.0.0.3"))
	if requests > 3 || requests != requests0 {
		t.Errorf("a opened %v requests to b, %v of them for %d events; want one stream, kept open", requests, requests-requests0, n)
	}
	testproc.Eventually(t, 10*time.Second, "every event acknowledged", func() bool {
		return testutil.ToFloat64(a.m.peerEventsSent.WithLabelValues("127.0.0.3")) == n+1
	})
	t.Logf("%d events one by one: %v peer requests in all, %d batches", n, requests, histogramCount(t, a, "127.0.0.3")-batches0)
}

func histogramCount(t *testing.T, s *testServer, peer string) uint64 {
	t.Helper()
	var pb dto.Metric
	if err := s.m.peerPostDuration.WithLabelValues(peer).(prometheus.Metric).Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetHistogram().GetSampleCount()
}

// A stream with nothing to send stays open across silences longer than
// the peer's read timeout: keepalive lines fill them.
func TestStreamKeepalivesOutlastTheReadTimeout(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2", "127.0.0.3")
	peers := []string{"127.0.0.2", "127.0.0.3"}
	opts := Options{InternalReadTimeout: time.Second, PeerTimeout: time.Second}
	a := startPeer(t, "127.0.0.2", port, peers, opts)
	b := startPeer(t, "127.0.0.3", port, peers, opts)
	sub := ssetest.Dial(t, b.url("stream=k"), "")
	if err := a.Send(t.Context(), "k", "before"); err != nil {
		t.Fatal(err)
	}
	if e := sub.Next(t, 10*time.Second); e.Data != "before" {
		t.Fatalf("got %q", e.Data)
	}
	requests := testutil.ToFloat64(a.m.peerRequests.WithLabelValues("127.0.0.3"))
	failures := testutil.ToFloat64(a.m.peerPostErrors.WithLabelValues("127.0.0.3"))
	// Ten keepalives from a (one every third of a second) are three
	// times the read timeout of silence.
	from := b.peerStreams.keepalives.Load()
	testproc.Eventually(t, 30*time.Second, "ten keepalives", func() bool { return b.peerStreams.keepalives.Load() >= from+10 })
	if err := a.Send(t.Context(), "k", "after"); err != nil {
		t.Fatal(err)
	}
	if e := sub.Next(t, 10*time.Second); e.Data != "after" {
		t.Fatalf("got %q", e.Data)
	}
	if n := testutil.ToFloat64(a.m.peerRequests.WithLabelValues("127.0.0.3")); n != requests {
		t.Errorf("a opened %v more requests to b across the silence, want its stream kept open", n-requests)
	}
	if n := testutil.ToFloat64(a.m.peerPostErrors.WithLabelValues("127.0.0.3")); n != failures {
		t.Errorf("%v failed deliveries across the silence, want none", n-failures)
	}
}

// oldPeer answers like a replica that predates streaming: one batch per
// request, 415 for any other Content-Type, without reading the body.
type oldPeer struct {
	mu       sync.Mutex
	accepted []Event
	streams  int
	posts    int
}

func (p *oldPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != "application/json" {
		p.mu.Lock()
		p.streams++
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnsupportedMediaType)
		_, _ = w.Write([]byte(`{"error":"Content-Type must be application/json"}`))
		return
	}
	events, err := DecodeEvents(r.Body, 0)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.posts++
	p.accepted = append(p.accepted, events...)
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"accepted":` + strconv.Itoa(len(events)) + `}`))
}

func (p *oldPeer) counts() (streams, posts, accepted int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.streams, p.posts, len(p.accepted)
}

func TestSenderFallsBackToPostsForAPeerThatDoesNotStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	old := &oldPeer{}
	srv := &http.Server{Handler: old}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	opts := Options{PeerFinder: staticFinder(t, "127.0.0.2", "127.0.0.3"), PeerTimeout: 30 * time.Second}
	opts.setDefaults()
	m := newMetrics(nil)
	out := newOutbox(opts.OutboxSize, opts.OutboxBytes, opts.PeerCutoff)
	hp := newHTTPPeers("127.0.0.2", port, "", opts.PeerTimeout)
	t.Cleanup(hp.close)
	b := newBroadcaster(logr.Discard(), m, &opts, "127.0.0.2", hp, out)
	b.streamRetry = 500 * time.Millisecond
	b.setPeers(t.Context(), []string{"127.0.0.2", "127.0.0.3"})
	t.Cleanup(b.stop)
	for i := 1; i <= 20; i++ {
		if _, err := out.add("me", []Event{{Stream: "s", Msg: strconv.Itoa(i)}}); err != nil {
			t.Fatal(err)
		}
		b.wakeAll()
	}
	// The stream is refused at once (the peer's 30s of patience never
	// come into it), and every event goes by POST, in order.
	testproc.Eventually(t, 10*time.Second, "20 events posted", func() bool { _, _, n := old.counts(); return n == 20 })
	old.mu.Lock()
	for i, e := range old.accepted {
		if e.Msg != strconv.Itoa(i+1) {
			t.Errorf("event %d is %q", i, e.Msg)
		}
	}
	old.mu.Unlock()
	// After streamRetry the stream is tried again, and refused again.
	testproc.Eventually(t, 10*time.Second, "the stream tried again", func() bool { s, _, _ := old.counts(); return s >= 2 })
	streams, posts, _ := old.counts()
	if got := testutil.ToFloat64(m.peerRequests.WithLabelValues("127.0.0.3")); got < float64(streams+posts) {
		t.Errorf("sser_peer_requests_total = %v, want at least the %d streams and %d posts", got, streams, posts)
	}
	if n := testutil.ToFloat64(m.peerPostErrors.WithLabelValues("127.0.0.3")); n != 0 {
		t.Errorf("a peer that does not stream counted %v failures, want 0", n)
	}
}
