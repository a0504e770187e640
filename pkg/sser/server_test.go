package sser

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/peerfinder"
)

type testServer struct {
	*ServerImpl
	front    *httptest.Server
	client   *http.Client // one that reaches front (TLS, HTTP/2)
	internal string       // http://host:port
	cancel   context.CancelFunc
}

// startServer runs a server alone in its peer set on loopback, with its SSE
// handler behind an httptest server (HTTP/1.1: subscriptions are hijacked).
func startServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	return startServerFront(t, opts, frontHTTP1)
}

// frontKind is how the SSE handler is reached in a test.
type frontKind int

const (
	// frontHTTP1 is a plain net/http server: HTTP/1.1, hijacked.
	frontHTTP1 frontKind = iota
	// frontWrapped is HTTP/1.1 through a middleware whose ResponseWriter
	// flushes but cannot be hijacked (nor unwrapped).
	frontWrapped
	// frontHTTP2 is HTTP/2 over TLS.
	frontHTTP2
)

func (k frontKind) String() string {
	return [...]string{"http1-hijacked", "http1-wrapped", "http2"}[k]
}

// flushOnlyWriter hides every method of a ResponseWriter but those of
// http.ResponseWriter and http.Flusher, as some middleware does.
type flushOnlyWriter struct{ w http.ResponseWriter }

func (f flushOnlyWriter) Header() http.Header         { return f.w.Header() }
func (f flushOnlyWriter) Write(p []byte) (int, error) { return f.w.Write(p) }
func (f flushOnlyWriter) WriteHeader(code int)        { f.w.WriteHeader(code) }
func (f flushOnlyWriter) Flush()                      { f.w.(http.Flusher).Flush() }

func startServerFront(t *testing.T, opts Options, kind frontKind) *testServer {
	t.Helper()
	if opts.PeerFinder == nil {
		pf, err := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		opts.PeerFinder = pf
	}
	if opts.InternalAddr == "" {
		opts.InternalAddr = "127.0.0.1:0"
	}
	s, err := NewWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := s.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	var handler http.Handler = s.ClientConnectionHandler(ctx)
	if kind == frontWrapped {
		inner := handler
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inner.ServeHTTP(flushOnlyWriter{w}, r) })
	}
	front := httptest.NewUnstartedServer(handler)
	if kind == frontHTTP2 {
		front.EnableHTTP2 = true
		front.StartTLS()
	} else {
		front.Start()
	}
	ts := &testServer{ServerImpl: s, front: front, client: front.Client(), internal: "http://" + s.InternalAddr(), cancel: cancel}
	t.Cleanup(func() {
		cancel()
		front.CloseClientConnections()
		front.Close()
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Error("server did not stop within 10s")
		}
	})
	return ts
}

func (ts *testServer) url(query string) string { return ts.front.URL + "/?" + query }

func (ts *testServer) post(t *testing.T, path, contentType, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.internal+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestSubscribeReceivesEvents(t *testing.T) {
	ts := startServer(t, Options{})
	sub := ssetest.Dial(t, ts.url("stream=a&stream=b"), "")
	other := ssetest.Dial(t, ts.url("stream=c"), "")
	if got := sub.Resp.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("Cache-Control = %q", got)
	}
	if got := sub.Resp.Header.Get("X-Accel-Buffering"); got != "no" {
		t.Errorf("X-Accel-Buffering = %q", got)
	}
	ctx := t.Context()
	if err := ts.Send(ctx, "a", "one"); err != nil {
		t.Fatal(err)
	}
	if err := ts.Publish(ctx, Event{Stream: "b", Msg: "two\nlines", Event: "tick"}); err != nil {
		t.Fatal(err)
	}
	if err := ts.Send(ctx, "c", "elsewhere"); err != nil {
		t.Fatal(err)
	}
	want := []ssetest.Event{{Event: "message", Data: "one"}, {Event: "tick", Data: "two\nlines"}}
	for i, w := range want {
		got := sub.Next(t, 5*time.Second)
		if got.Event != w.Event || got.Data != w.Data {
			t.Errorf("event %d = %+v, want %+v", i, got, w)
		}
		if got.ID == "" {
			t.Errorf("event %d has no id", i)
		}
	}
	if got := other.Next(t, 5*time.Second); got.Data != "elsewhere" {
		t.Errorf("stream c got %+v", got)
	}
	select {
	case ev := <-sub.Events:
		t.Errorf("unexpected event %+v on a,b", ev)
	default:
	}
}

func TestConnectPreamble(t *testing.T) {
	ts := startServer(t, Options{Retry: 1500 * time.Millisecond})
	if err := ts.Send(t.Context(), "x", "before"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(ts.url("stream=p"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	var lines []string
	for len(lines) < 4 {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if lines[0] != "retry: 1500\n" || lines[1] != "\n" {
		t.Errorf("preamble starts %q, want a retry line", lines[:2])
	}
	// The id-only frame tells the client its resume point before any event.
	// Stream p has had no event: the id claims none, not even x's.
	id, ok := strings.CutPrefix(strings.TrimSuffix(lines[2], "\n"), "id: ")
	if !ok || lines[3] != "\n" {
		t.Fatalf("preamble id frame = %q", lines[2:4])
	}
	if covers, err := IDCovers(id, ts.Origin(), 1); err != nil || covers {
		t.Errorf("preamble id %q of an empty stream claims the event on another stream (err %v)", id, err)
	}
}

func TestHeartbeat(t *testing.T) {
	ts := startServer(t, Options{Heartbeat: 20 * time.Millisecond})
	sub := ssetest.Dial(t, ts.url("stream=h"), "")
	deadline := time.Now().Add(5 * time.Second)
	for sub.Comments() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d heartbeats in 5s with a 20ms interval", sub.Comments())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBadSubscriptions(t *testing.T) {
	ts := startServer(t, Options{})
	tests := []struct {
		name   string
		method string
		query  string
		header string
		status int
	}{
		{"no stream", "GET", "", "", 400},
		{"empty stream", "GET", "stream=", "", 400},
		{"bad stream", "GET", "stream=a%20b", "", 400},
		{"too long", "GET", "stream=" + strings.Repeat("x", 200), "", 400},
		{"bad last id", "GET", "stream=a", "not-an-id", 400},
		{"bad last id query", "GET", "stream=a&lastEventID=zz", "", 400},
		{"POST", "POST", "stream=a", "", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, ts.url(tt.query), nil)
			if tt.header != "" {
				req.Header.Set("Last-Event-ID", tt.header)
			}
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				resp.Body.Close()
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(string(body), `{"error":"`) || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("body %q (%s) is not a JSON error", body, resp.Header.Get("Content-Type"))
			}
			if tt.status == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestInternalEndpointErrorsChangeNothing(t *testing.T) {
	ts := startServer(t, Options{MaxBodyBytes: 1024, MaxBatchEvents: 3})
	sub := ssetest.Dial(t, ts.url("stream=s"), "")
	big := `{"stream":"s","msg":"` + strings.Repeat("x", 2000) + `"}`
	tests := []struct {
		name, method, path, ctype, body string
		status                          int
	}{
		{"malformed", "POST", PublishURLPath, "application/json", `{"stream":"s",`, 400},
		{"malformed send", "POST", PeerEndpointURLPath, "application/json", `[{"stream":"s","msg":"m"},`, 400},
		{"oversized", "POST", PublishURLPath, "application/json", big, 413},
		{"too many events", "POST", PublishURLPath, "application/json", `[{"stream":"s","msg":"1"},{"stream":"s","msg":"2"},{"stream":"s","msg":"3"},{"stream":"s","msg":"4"}]`, 413},
		{"bad stream in batch", "POST", PublishURLPath, "application/json", `[{"stream":"s","msg":"ok"},{"stream":"s s","msg":"bad"}]`, 400},
		{"empty msg", "POST", PeerEndpointURLPath, "application/json", `{"stream":"s","msg":""}`, 400},
		{"wrong content type", "POST", PublishURLPath, "text/plain", `{"stream":"s","msg":"m"}`, 415},
		{"wrong method", "GET", PublishURLPath, "", "", 405},
		{"wrong method send", "PUT", PeerEndpointURLPath, "application/json", `{"stream":"s","msg":"m"}`, 405},
		{"unknown path", "GET", "/nope", "", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, ts.internal+tt.path, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if !strings.HasPrefix(string(body), `{"error":"`) {
				t.Errorf("body %q is not a JSON error", body)
			}
			if tt.status == 405 && !strings.Contains(resp.Header.Get("Allow"), "POST") && tt.path != "/nope" {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
		})
	}
	// Nothing of the above reached the subscriber: the next event is the marker.
	if err := ts.Send(t.Context(), "s", "marker"); err != nil {
		t.Fatal(err)
	}
	if got := sub.Next(t, 5*time.Second); got.Data != "marker" {
		t.Errorf("first event after bad requests = %+v, want the marker", got)
	}
}

func TestSendAndPublishEndpoints(t *testing.T) {
	ts := startServer(t, Options{})
	sub := ssetest.Dial(t, ts.url("stream=s"), "")
	// Seed format on the peer endpoint: local subscribers only, no id.
	resp, body := ts.post(t, PeerEndpointURLPath, "application/json", `{"stream":"s","msg":"seed"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("send: %d %s", resp.StatusCode, body)
	}
	resp, body = ts.post(t, PublishURLPath, "application/json; charset=utf-8", `[{"stream":"s","msg":"p1","event":"e"},{"stream":"s","msg":"p2"}]`)
	if resp.StatusCode != 200 || !strings.Contains(body, `"accepted":2`) {
		t.Fatalf("publish: %d %s", resp.StatusCode, body)
	}
	got := sub.Collect(3, 5*time.Second)
	if len(got) != 3 || got[0].Data != "seed" || got[1].Data != "p1" || got[1].Event != "e" || got[2].Data != "p2" {
		t.Fatalf("got %+v", got)
	}
	if !strings.HasSuffix(got[2].ID, "."+strconv.FormatUint(2, 36)) {
		t.Errorf("id after two published events = %q", got[2].ID)
	}
}

func TestResumeExactly(t *testing.T) {
	ts := startServer(t, Options{})
	ctx := t.Context()
	sub := ssetest.Dial(t, ts.url("stream=r&stream=q"), "")
	for i := 1; i <= 3; i++ {
		if err := ts.Send(ctx, "r", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	got := sub.Collect(3, 5*time.Second)
	if len(got) != 3 {
		t.Fatalf("got %d events", len(got))
	}
	last := sub.LastID()
	sub.Close()
	for i := 4; i <= 6; i++ {
		stream := "r"
		if i == 5 {
			stream = "q"
		}
		if err := ts.Send(ctx, stream, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		if err := ts.Send(ctx, "unrelated", "x"); err != nil {
			t.Fatal(err)
		}
	}
	for _, how := range []string{"header", "query"} {
		t.Run(how, func(t *testing.T) {
			var again *ssetest.Sub
			if how == "header" {
				again = ssetest.Dial(t, ts.url("stream=r&stream=q"), last)
			} else {
				again = ssetest.Dial(t, ts.url("stream=r&stream=q&lastEventID="+last), "")
			}
			if h := again.Resp.Header.Get("X-Sser-Resume"); h != "exact" {
				t.Errorf("X-Sser-Resume = %q", h)
			}
			replay := again.Collect(3, 5*time.Second)
			var data []string
			for _, e := range replay {
				data = append(data, e.Data)
			}
			if strings.Join(data, ",") != "4,5,6" {
				t.Fatalf("replayed %v, want 4,5,6", data)
			}
			again.Close()
		})
	}
}

func TestResumeBeyondHistoryIsTold(t *testing.T) {
	ts := startServer(t, Options{HistorySize: 2})
	ctx := t.Context()
	sub := ssetest.Dial(t, ts.url("stream=h"), "")
	if err := ts.Send(ctx, "h", "1"); err != nil {
		t.Fatal(err)
	}
	sub.Next(t, 5*time.Second)
	last := sub.LastID()
	sub.Close()
	for i := 2; i <= 6; i++ {
		if err := ts.Send(ctx, "h", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	again := ssetest.Dial(t, ts.url("stream=h"), last)
	if h := again.Resp.Header.Get("X-Sser-Resume"); h != "lost" {
		t.Errorf("X-Sser-Resume = %q, want lost", h)
	}
	got := again.Collect(3, 5*time.Second)
	if len(got) != 3 || got[0].Data != "5" || got[1].Data != "6" || got[2].Event != LostEventType {
		t.Fatalf("got %+v, want 5, 6 then a %s event", got, LostEventType)
	}
	if testutil.ToFloat64(ts.m.resumes.WithLabelValues("lost")) != 1 {
		t.Error("lost resume not counted")
	}
}

func TestSlowSubscriberIsDisconnectedFastOneIsNot(t *testing.T) {
	// The write timeout is long: the slow client must be disconnected by
	// its queue overflowing, and with a short one a loaded machine may let
	// its blocked write time out first (the test then failed, about 1 run
	// in 6 under -race, on the code before hijacking too).
	ts := startServer(t, Options{SubscriberQueue: 64, WriteTimeout: time.Minute})
	fast := ssetest.Dial(t, ts.url("stream=s"), "")

	// The slow client sends its request and never reads.
	u := strings.TrimPrefix(ts.front.URL, "http://")
	conn, err := net.Dial("tcp", u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /?stream=s HTTP/1.1\r\nHost: %s\r\n\r\n", u)
	deadline := time.Now().Add(5 * time.Second)
	for ts.hub.subscriberCount() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("slow subscriber never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}

	msg := strings.Repeat("x", 64<<10)
	overflow := ts.m.subscriberClosed.WithLabelValues("overflow")
	sent := 0
	// Publish in chunks, letting the fast subscriber keep up, until the slow
	// one's socket buffers and queue are full and it is cut off.
	for chunk := 0; testutil.ToFloat64(overflow) == 0; chunk++ {
		if chunk == 100 {
			t.Fatalf("slow subscriber not disconnected after %d events", sent)
		}
		for range 32 {
			sent++
			if err := ts.Send(t.Context(), "s", strconv.Itoa(sent)+msg); err != nil {
				t.Fatal(err)
			}
		}
		got := fast.Collect(32, 10*time.Second)
		if len(got) != 32 || !strings.HasPrefix(got[0].Data, strconv.Itoa(sent-31)+"x") {
			t.Fatalf("fast subscriber fell behind: %d of 32 events in chunk %d", len(got), chunk)
		}
	}
	if ts.hub.subscriberCount() != 1 {
		t.Errorf("subscribers = %d, want the fast one only", ts.hub.subscriberCount())
	}
	select {
	case <-fast.Done():
		t.Fatal("fast subscriber was disconnected")
	default:
	}
	if err := ts.Send(t.Context(), "s", "after"); err != nil {
		t.Fatal(err)
	}
	if got := fast.Next(t, 5*time.Second); got.Data != "after" {
		t.Errorf("fast subscriber got %.20q, want after", got.Data)
	}
}

func TestCORSPreflight(t *testing.T) {
	ts := startServer(t, Options{CORSOrigins: []string{"https://app.example"}})
	for _, tt := range []struct {
		origin string
		allow  bool
	}{{"https://app.example", true}, {"https://evil.example", false}} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodOptions, ts.url("stream=s"), nil)
		req.Header.Set("Origin", tt.origin)
		req.Header.Set("Access-Control-Request-Method", "GET")
		req.Header.Set("Access-Control-Request-Headers", "last-event-id")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("Access-Control-Allow-Origin")
		if tt.allow {
			if resp.StatusCode != 204 || got != tt.origin || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
				t.Errorf("%s: status %d, headers %v", tt.origin, resp.StatusCode, resp.Header)
			}
		} else if got != "" {
			t.Errorf("%s allowed", tt.origin)
		}
	}
}

func TestMaxConnectionTime(t *testing.T) {
	ts := startServer(t, Options{MaxConnectionTime: 200 * time.Millisecond})
	sub := ssetest.Dial(t, ts.url("stream=m"), "")
	select {
	case <-sub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection outlived its maximum time")
	}
	if testutil.ToFloat64(ts.m.subscriberClosed.WithLabelValues("max_age")) != 1 {
		t.Error("max_age close not counted")
	}
}

func TestReadyzAndDrainSpread(t *testing.T) {
	ts := startServer(t, Options{})
	get := func(path string) int {
		resp, err := http.Get(ts.internal + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/readyz") != 200 || get("/healthz") != 200 {
		t.Fatal("not ready after Start")
	}
	const n = 40
	subs := make([]*ssetest.Sub, n)
	for i := range subs {
		subs[i] = ssetest.Dial(t, ts.url("stream=d"), "")
	}
	window := 2 * time.Second
	start := time.Now()
	go ts.Drain(t.Context(), window)
	deadline := time.Now().Add(5 * time.Second)
	for get("/readyz") != 503 {
		if time.Now().After(deadline) {
			t.Fatal("readyz still OK while draining")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if get("/healthz") != 200 {
		t.Error("healthz failed while draining")
	}
	// Still receiving while draining.
	if err := ts.Send(t.Context(), "d", "during drain"); err != nil {
		t.Fatal(err)
	}
	var offsets []time.Duration
	for _, s := range subs {
		select {
		case <-s.Done():
			offsets = append(offsets, time.Since(start))
		case <-time.After(window + 5*time.Second):
			t.Fatal("subscriber not closed by the end of the drain window")
		}
	}
	// Closed one by one in order of waiting, so offsets[i] is an upper bound
	// of the i-th close; what matters is that they did not all go at once.
	early, late := 0, 0
	for _, d := range offsets {
		if d < window/4 {
			early++
		}
		if d > window/2 {
			late++
		}
	}
	if early == n || late == 0 {
		t.Errorf("disconnects not spread over the %s window: offsets %v", window, offsets)
	}
	if got := testutil.ToFloat64(ts.m.subscriberClosed.WithLabelValues("drain")); got != n {
		t.Errorf("drain closes counted %v, want %d", got, n)
	}
}

// Streams fan out in parallel; each subscriber must still see every origin
// in seq order, and ids that never step back, whether it follows one stream
// or several.
func TestConcurrentStreamsKeepOrder(t *testing.T) {
	ts := startServer(t, Options{SubscriberQueue: 100000})
	const streams, per = 4, 400
	multi := ssetest.Dial(t, ts.url("stream=c0&stream=c1&stream=c2&stream=c3"), "")
	singles := make([]*ssetest.Sub, streams)
	for i := range singles {
		singles[i] = ssetest.Dial(t, ts.url("stream=c"+strconv.Itoa(i)), "")
	}
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			origin := "o" + strconv.Itoa(i)
			for n := 1; n <= per; n++ {
				// Each goroutine is an origin on its own stream, and also
				// writes every tenth event to the next stream.
				stream := "c" + strconv.Itoa(i)
				if n%10 == 0 {
					stream = "c" + strconv.Itoa((i+1)%streams)
				}
				if err := ts.Deliver(Event{Stream: stream, Msg: origin + "-" + strconv.Itoa(n), Origin: origin, Seq: uint64(n)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	check := func(name string, evs []ssetest.Event, want int) {
		t.Helper()
		if len(evs) != want {
			t.Fatalf("%s: %d events, want %d", name, len(evs), want)
		}
		last := map[string]int{}
		var prev position
		for _, ev := range evs {
			origin, nText, _ := strings.Cut(ev.Data, "-")
			n, _ := strconv.Atoi(nText)
			if n <= last[origin] {
				t.Fatalf("%s: %s after %s-%d", name, ev.Data, origin, last[origin])
			}
			last[origin] = n
			pos, err := parsePosition(ev.ID)
			if err != nil || !pos.covers(prev) {
				t.Fatalf("%s: id %q steps back from %q", name, ev.ID, prev)
			}
			prev = pos
		}
	}
	check("multi", multi.Collect(streams*per, 20*time.Second), streams*per)
	for i, s := range singles {
		check("c"+strconv.Itoa(i), s.Collect(per, 20*time.Second), per)
	}
}

func TestForbiddenStreamGets204(t *testing.T) {
	ts := startServer(t, Options{AllowStream: func(_ *http.Request, s string) bool { return strings.HasPrefix(s, "public.") }})
	for _, tt := range []struct {
		query  string
		status int
	}{{"stream=public.news", 200}, {"stream=private.x", 204}, {"stream=public.a&stream=private.b", 204}} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.url(tt.query), nil)
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d", tt.query, resp.StatusCode, tt.status)
		}
	}
}

// A lone replica (the localhost finder) bound to an address other than
// 127.0.0.1 is its own peer set: it never sends its events to 127.0.0.1,
// which is not itself.
func TestLoneReplicaPeersOnlyWithItself(t *testing.T) {
	ts := startServer(t, Options{PeerFinder: peerfinder.NewPeerFinderLocalhost(), InternalAddr: "127.0.0.3:0"})
	if got := ts.Peers(); len(got) != 1 || got[0] != "127.0.0.3" {
		t.Fatalf("peer set %v, want only this replica's own address 127.0.0.3", got)
	}
	if err := ts.Send(t.Context(), "s", "hello"); err != nil {
		t.Fatal(err)
	}
	if n := ts.out.lag("127.0.0.1"); n != 0 || len(ts.otherPeers()) != 0 {
		t.Errorf("a sender to another address exists (lag %d, others %v)", n, ts.otherPeers())
	}
}

// Operators can tell which build a replica runs from /metrics alone.
func TestBuildInfoIsExported(t *testing.T) {
	ts := startServer(t, Options{})
	for _, name := range []string{"sser_build_info"} {
		n, ok, err := testproc.Metric(ts.internal+"/metrics", name, "")
		if err != nil || !ok || n != 1 {
			t.Errorf("%s = %v (found %v, %v), want 1", name, n, ok, err)
		}
	}
}
