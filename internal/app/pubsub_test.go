package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"
)

// pubRecorder is a fake internal API that records publish bodies.
type pubRecorder struct {
	mu     sync.Mutex
	bodies []pubEvent
	paths  []string
	ctypes []string
}

func (p *pubRecorder) handler(status int, reply string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var ev pubEvent
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &ev)
		p.mu.Lock()
		p.bodies = append(p.bodies, ev)
		p.paths = append(p.paths, r.URL.Path)
		p.ctypes = append(p.ctypes, r.Header.Get("Content-Type"))
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, reply)
	}
}

func TestRunPub(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		stdin      string
		status     int
		reply      string
		path       string // appended to the server URL for --url
		want       []pubEvent
		wantPath   string
		wantErr    string
		wantUsage  bool
		envURLOnly bool
	}{
		{
			name: "message from args",
			args: []string{"--stream", "prices", "--event", "tick", "hello", "world"},
			want: []pubEvent{{Stream: "prices", Msg: "hello world", Event: "tick"}},
		},
		{
			name:  "one event per stdin line",
			args:  []string{"--stream", "logs"},
			stdin: "one\r\n\ntwo\nthree", // CRLF trimmed, empty line skipped, last line without LF kept
			want:  []pubEvent{{Stream: "logs", Msg: "one"}, {Stream: "logs", Msg: "two"}, {Stream: "logs", Msg: "three"}},
		},
		{
			name:     "full URL kept",
			args:     []string{"--stream", "s", "m"},
			path:     "/api/json/v1/send",
			want:     []pubEvent{{Stream: "s", Msg: "m"}},
			wantPath: "/api/json/v1/send",
		},
		{
			name:       "SSER_URL",
			args:       []string{"--stream", "s", "m"},
			want:       []pubEvent{{Stream: "s", Msg: "m"}},
			envURLOnly: true,
		},
		{
			name:    "server error shows its reason",
			args:    []string{"--stream", "bad name!", "m"},
			status:  http.StatusBadRequest,
			reply:   `{"error":"invalid stream name \"bad name!\""}`,
			want:    []pubEvent{{Stream: "bad name!", Msg: "m"}},
			wantErr: `400 Bad Request: invalid stream name "bad name!"`,
		},
		{
			name:    "non-JSON error body",
			args:    []string{"--stream", "s", "m"},
			status:  http.StatusBadGateway,
			reply:   "upstream down",
			want:    []pubEvent{{Stream: "s", Msg: "m"}},
			wantErr: "502 Bad Gateway: upstream down",
		},
		{
			name:    "stdin stops at the first failure",
			args:    []string{"--stream", "s"},
			stdin:   "a\nb\n",
			status:  http.StatusServiceUnavailable,
			reply:   `{"error":"draining"}`,
			want:    []pubEvent{{Stream: "s", Msg: "a"}},
			wantErr: "line 1: publish to",
		},
		{name: "stream required", args: []string{"m"}, wantUsage: true},
		{name: "unknown flag", args: []string{"--nope"}, wantUsage: true},
		{name: "bad url", args: []string{"--url", "localhost:7000", "--stream", "s", "m"}, wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &pubRecorder{}
			status := tt.status
			if status == 0 {
				status = http.StatusOK
			}
			srv := httptest.NewServer(rec.handler(status, tt.reply))
			defer srv.Close()
			args := tt.args
			if tt.envURLOnly {
				t.Setenv("SSER_URL", srv.URL)
			} else if !slicesContains(args, "--url") {
				args = append([]string{"--url", srv.URL + tt.path}, args...)
			}
			var stdout, stderr bytes.Buffer
			err := RunPub(t.Context(), args, strings.NewReader(tt.stdin), &stdout, &stderr)
			switch {
			case tt.wantUsage:
				if !errors.Is(err, errUsage) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if fmt.Sprint(rec.bodies) != fmt.Sprint(tt.want) {
				t.Fatalf("published %+v, want %+v", rec.bodies, tt.want)
			}
			wantPath := tt.wantPath
			if wantPath == "" {
				wantPath = pubPath
			}
			for i := range rec.paths {
				if rec.paths[i] != wantPath || rec.ctypes[i] != "application/json" {
					t.Fatalf("request %d: %s %s", i, rec.paths[i], rec.ctypes[i])
				}
			}
		})
	}
}

func TestRunPubTimeout(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	err := RunPub(t.Context(), []string{"--url", srv.URL, "--stream", "s", "--timeout", "50ms", "m"}, nil, io.Discard, io.Discard)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
}

func TestRunPubIdempotencyKey(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		stdin     string
		wantKeys  []string
		wantUsage bool
	}{
		{name: "no key, no header", args: []string{"m"}, wantKeys: []string{""}},
		{name: "one message", args: []string{"--idempotency-key", "order-42", "m"}, wantKeys: []string{"order-42"}},
		{name: "one key per stdin event", args: []string{"--idempotency-key", "run-7"}, stdin: "a\n\nb\nc\n", wantKeys: []string{"run-7.1", "run-7.2", "run-7.3"}},
		{name: "key too long", args: []string{"--idempotency-key", strings.Repeat("k", 129), "m"}, wantUsage: true},
		{name: "key not printable", args: []string{"--idempotency-key", "a\tb", "m"}, wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var keys []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				keys = append(keys, r.Header.Get("Idempotency-Key"))
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"accepted":1}`)
			}))
			defer srv.Close()
			var stderr bytes.Buffer
			err := RunPub(t.Context(), append([]string{"--url", srv.URL, "--stream", "s"}, tt.args...), strings.NewReader(tt.stdin), io.Discard, &stderr)
			mu.Lock()
			defer mu.Unlock()
			if tt.wantUsage {
				if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--idempotency-key") {
					t.Fatalf("err = %v, stderr %q: want a usage error naming the key", err, stderr.String())
				}
				if len(keys) != 0 {
					t.Fatalf("published %d times with a bad key", len(keys))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%q", keys) != fmt.Sprintf("%q", tt.wantKeys) {
				t.Fatalf("Idempotency-Key headers %q, want %q", keys, tt.wantKeys)
			}
		})
	}
}

// TestRunPubRetriesBackPressure: a 503 with Retry-After (the replica took
// nothing) is retried a bounded number of times; other failures are not.
func TestRunPubRetriesBackPressure(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		refusals   int    // answers 503 before the first 200
		retryAfter string // on the 503s
		wantCalls  int
		wantErr    string
	}{
		{name: "retried until accepted", refusals: 2, retryAfter: "0", wantCalls: 3},
		{name: "http date in the past", refusals: 1, retryAfter: "Mon, 02 Jan 2006 15:04:05 GMT", wantCalls: 2},
		{name: "bounded", args: []string{"--retries", "2"}, refusals: 100, retryAfter: "0", wantCalls: 3, wantErr: "503 Service Unavailable: back-pressure"},
		{name: "no retries", args: []string{"--retries", "0"}, refusals: 1, retryAfter: "0", wantCalls: 1, wantErr: "503"},
		{name: "no Retry-After, no retry", refusals: 1, wantCalls: 1, wantErr: "503"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var calls int
			var keys []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				n := calls
				keys = append(keys, r.Header.Get("Idempotency-Key"))
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				if n <= tt.refusals {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					w.WriteHeader(http.StatusServiceUnavailable)
					fmt.Fprint(w, `{"error":"back-pressure: a peer is catching up"}`)
					return
				}
				fmt.Fprint(w, `{"accepted":1}`)
			}))
			defer srv.Close()
			args := append(append([]string{"--url", srv.URL, "--stream", "s", "--idempotency-key", "k"}, tt.args...), "m")
			err := RunPub(t.Context(), args, nil, io.Discard, io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatal(err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != tt.wantCalls {
				t.Fatalf("%d requests, want %d", calls, tt.wantCalls)
			}
			for i, k := range keys {
				if k != "k" {
					t.Fatalf("attempt %d sent Idempotency-Key %q: a retry must send the same key", i, k)
				}
			}
		})
	}
}

// TestPubWaitsAsTold: the wait before a retry is the Retry-After, at most
// pubMaxRetryAfter, and an interrupted wait ends the publish.
func TestPubWaitsAsTold(t *testing.T) {
	answers := []string{"3600", "5", ""} // Retry-After of each 503; "" = accept
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		a := answers[min(n, len(answers)-1)]
		n++
		mu.Unlock()
		if a == "" {
			fmt.Fprint(w, `{"accepted":1}`)
			return
		}
		w.Header().Set("Retry-After", a)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	var waits []time.Duration
	p := &pubClient{url: srv.URL, timeout: 10 * time.Second, retries: 3, hc: srv.Client(),
		sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }}
	if _, err := p.publish(t.Context(), pubEvent{Stream: "s", Msg: "m"}, ""); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(waits) != fmt.Sprint([]time.Duration{pubMaxRetryAfter, 5 * time.Second}) {
		t.Fatalf("waits %v, want [%s 5s]", waits, pubMaxRetryAfter)
	}

	// The wait is interrupted: the publish fails with the 503 and the reason.
	mu.Lock()
	n = 0
	mu.Unlock()
	p.sleep = func(context.Context, time.Duration) error { return context.Canceled }
	_, err := p.publish(t.Context(), pubEvent{Stream: "s", Msg: "m"}, "")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v, want the 503 and the cancellation", err)
	}
}

func TestSleepCtx(t *testing.T) {
	if err := sleepCtx(t.Context(), 0); err != nil {
		t.Fatalf("no wait: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	done := make(chan error, 1)
	go func() { done <- sleepCtx(ctx, time.Hour) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sleepCtx kept waiting after its context ended")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{" 5 ", 5 * time.Second, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		d, ok := parseRetryAfter(tt.in, now)
		if d != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tt.in, d, ok, tt.want, tt.ok)
		}
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// subServer is a fake frontend: connection n is answered by script(n).
type subServer struct {
	*httptest.Server
	mu      sync.Mutex
	n       int
	lastIDs []string
	queries []string
	stop    chan struct{}
}

func newSubServer(t *testing.T, script func(n int, w http.ResponseWriter, r *http.Request, stop <-chan struct{})) *subServer {
	s := &subServer{stop: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := s.n
		s.n++
		s.lastIDs = append(s.lastIDs, r.Header.Get("Last-Event-ID"))
		s.queries = append(s.queries, r.URL.Path+"?"+r.URL.RawQuery)
		s.mu.Unlock()
		script(n, w, r, s.stop)
	}))
	t.Cleanup(func() {
		close(s.stop)
		s.Close()
	})
	return s
}

func subSSE(w http.ResponseWriter, frames string) {
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, frames)
	w.(http.Flusher).Flush()
}

func TestRunSub(t *testing.T) {
	// Connection 0: connect frames, two events, drop. Connection 1 must
	// resume from the last id and gets the rest.
	script := func(n int, w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		switch n {
		case 0:
			subSSE(w, "retry: 5\nid: o:0\n\n: heartbeat\n\nid: o:1\nevent: tick\ndata: 1\n\nid: o:2\ndata: two\ndata: lines\n\n")
		default:
			subSSE(w, "retry: 5\nid: o:2\n\nid: o:3\ndata: <3>\n\n")
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		}
	}
	tests := []struct {
		name       string
		args       []string
		wantOut    string
		wantQuery  string
		wantLastID []string
	}{
		{
			name:       "text",
			args:       []string{"--stream", "a", "--count", "3"},
			wantOut:    "[tick] 1\ntwo\nlines\n<3>\n",
			wantQuery:  "/events?stream=a",
			wantLastID: []string{"", "o:2"},
		},
		{
			name: "json and several streams",
			args: []string{"--stream", "a", "--stream", "b", "--json", "--count", "3", "--last-event-id", "o:0"},
			wantOut: `{"id":"o:1","event":"tick","data":"1"}` + "\n" +
				`{"id":"o:2","event":"message","data":"two\nlines"}` + "\n" +
				`{"id":"o:3","event":"message","data":"<3>"}` + "\n",
			wantQuery:  "/events?stream=a&stream=b",
			wantLastID: []string{"o:0", "o:2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newSubServer(t, script)
			var stdout, stderr bytes.Buffer
			err := RunSub(t.Context(), append([]string{"--url", srv.URL}, tt.args...), &stdout, &stderr)
			if err != nil {
				t.Fatalf("err = %v; stderr: %s", err, stderr.String())
			}
			if stdout.String() != tt.wantOut {
				t.Fatalf("stdout = %q, want %q", stdout.String(), tt.wantOut)
			}
			if !strings.Contains(stderr.String(), "reconnecting") || !strings.Contains(stderr.String(), "reconnected") {
				t.Fatalf("stderr does not report the reconnection: %q", stderr.String())
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.queries[0] != tt.wantQuery {
				t.Fatalf("query = %q, want %q", srv.queries[0], tt.wantQuery)
			}
			if fmt.Sprint(srv.lastIDs) != fmt.Sprint(tt.wantLastID) {
				t.Fatalf("Last-Event-IDs = %q, want %q", srv.lastIDs, tt.wantLastID)
			}
		})
	}
}

func TestRunSubStops(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		reply      string
		args       []string
		wantErr    string
		wantUsage  bool
		wantStderr string
	}{
		{name: "bad request is not retried", status: http.StatusBadRequest, reply: `{"error":"invalid stream name"}`, args: []string{"--stream", "x"}, wantErr: "400 Bad Request: invalid stream name"},
		{name: "204 stops", status: http.StatusNoContent, args: []string{"--stream", "x"}, wantErr: "204"},
		{name: "stream required", args: []string{}, wantUsage: true, wantStderr: "at least one --stream"},
		{name: "extra args", args: []string{"--stream", "x", "oops"}, wantUsage: true, wantStderr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newSubServer(t, func(n int, w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.reply)
			})
			var stderr bytes.Buffer
			err := RunSub(t.Context(), append([]string{"--url", srv.URL}, tt.args...), io.Discard, &stderr)
			if tt.wantUsage {
				if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.wantStderr) {
					t.Fatalf("err = %v, stderr %q", err, stderr.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.n != 1 {
				t.Fatalf("%d connections, want 1", srv.n)
			}
		})
	}
}

func TestRunSubInterrupted(t *testing.T) {
	srv := newSubServer(t, func(n int, w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		subSSE(w, "id: o:9\ndata: x\n\n")
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr testproc.Buffer
	done := make(chan error, 1)
	go func() { done <- RunSub(ctx, []string{"--url", srv.URL, "--stream", "s"}, &stdout, &stderr) }()
	for deadline := time.Now().Add(10 * time.Second); stdout.String() != "x\n"; {
		if time.Now().After(deadline) {
			t.Fatalf("no event printed; stdout %q", stdout.String())
		}
		time.Sleep(5 * time.Millisecond) // polling stdout, with a deadline
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("interrupted sub returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunSub did not return after its context ended")
	}
	if !strings.Contains(stderr.String(), "resume with --last-event-id 'o:9'") {
		t.Fatalf("stderr has no resume hint: %q", stderr.String())
	}
	if !strings.Contains(stderr.String(), "sser sub: connected to "+srv.URL) {
		t.Fatalf("stderr does not say it connected: %q", stderr.String())
	}
}

// sser pub says what it published, and where.
func TestRunPubSaysWhatItPublished(t *testing.T) {
	seq := 4
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seq++
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"accepted":1,"origin":"o1","first":%d,"last":%d}`, seq, seq)
	}))
	defer srv.Close()
	for _, tt := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"hello"}, "", "published 1 event to stream s (origin o1, seq 5)\n"},
		{nil, "a\nb\n", "published 2 events to stream s (origin o1, seqs 6-7)\n"},
		{[]string{"--quiet", "x"}, "", ""},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"--url", srv.URL, "--stream", "s"}, tt.args...)
		if err := RunPub(t.Context(), args, strings.NewReader(tt.stdin), &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		if stderr.String() != tt.want || stdout.Len() != 0 {
			t.Errorf("%q: stderr %q, stdout %q; want %q on stderr", tt.args, stderr.String(), stdout.String(), tt.want)
		}
	}
}

// TestRunSubResumesAcrossReplicaRestart runs two real sser replicas behind a
// switchable proxy (standing in for the Service) and checks that `sser sub`
// sees every event exactly once while its replica is killed, restarted, and
// the other replica is killed too: ids mean the same on every replica.
func TestRunSubResumesAcrossReplicaRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real sser processes; skipped with -short")
	}
	ipA, ipB := "127.0.0.2", "127.0.0.3"
	for _, ip := range []string{ipA, ipB} {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			testproc.RequireReal(t, "cannot bind %s (needs Linux loopback 127.0.0.0/8): %v", ip, err)
		}
		_ = ln.Close()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	front, internal := testproc.FreePorts(t, ipA, ipB)
	start := func(ip string) *testproc.Replica {
		return testproc.Start(t, testproc.Config{
			IP: ip, FrontendPort: front, InternalPort: internal,
			Args: []string{"--peer-finder", "static", "--peers", ipA + "," + ipB, "--pod-ip", ip, "--retry", "50ms", "--log-level", "debug"},
		})
	}
	a, b := start(ipA), start(ipB)
	a.WaitReady(t, 30*time.Second)
	b.WaitReady(t, 30*time.Second)

	// The proxy is the Service: it sends each new connection to target.
	var target atomic.Pointer[url.URL]
	setTarget := func(r *testproc.Replica) {
		u, _ := url.Parse(r.FrontendURL)
		target.Store(u)
	}
	setTarget(a)
	connected := make(chan string, 10)
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(target.Load()) },
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			connected <- resp.Request.URL.Host + " " + resp.Status
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0), // dropped upstreams are the point of the test
	})
	defer proxy.Close()
	waitConnected := func(want *testproc.Replica) {
		t.Helper()
		host := strings.TrimPrefix(want.FrontendURL, "http://")
		for {
			select {
			case c := <-connected:
				if c == host+" 200 OK" {
					return
				}
			case <-ctx.Done():
				t.Fatalf("sub did not connect to %s", host)
			}
		}
	}

	const total = 30
	var stdout, stderr testproc.Buffer
	subDone := make(chan error, 1)
	go func() {
		subDone <- RunSub(ctx, []string{"--url", proxy.URL, "--stream", "s", "--json", "--count", strconv.Itoa(total)}, &stdout, &stderr)
	}()
	publish := func(r *testproc.Replica, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := RunPub(ctx, []string{"--url", r.InternalURL, "--stream", "s", strconv.Itoa(i)}, nil, io.Discard, io.Discard); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	received := func() []string {
		var msgs []string
		for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			var ev subJSONEvent
			if line != "" && json.Unmarshal([]byte(line), &ev) == nil {
				msgs = append(msgs, ev.Data)
			}
		}
		return msgs
	}
	waitReceived := func(n int) {
		t.Helper()
		for len(received()) < n {
			if ctx.Err() != nil {
				t.Fatalf("received %d of %d events: %q\nstderr: %s", len(received()), n, received(), stderr.String())
			}
			time.Sleep(10 * time.Millisecond) // poll interval, bounded by ctx
		}
	}

	waitConnected(a)
	publish(b, 0, 10) // published on B, delivered on A through the peer path
	waitReceived(10)

	// A dies; the Service sends the reconnect to B, which resumes from A's id.
	setTarget(b)
	_ = a.Kill()
	_ = a.Wait(ctx)
	publish(b, 10, 20)
	waitConnected(b)

	// A comes back (a new process: new origin, history copied from B), then
	// B dies and the subscriber resumes on the new A.
	a2 := start(ipA)
	a2.WaitReady(t, 30*time.Second)
	waitReceived(20)
	setTarget(a2)
	_ = b.Kill()
	_ = b.Wait(ctx)
	waitConnected(a2)
	publish(a2, 20, total)

	select {
	case err := <-subDone:
		if err != nil {
			t.Fatalf("sub: %v\nstderr: %s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("sub did not finish: got %q\nstderr: %s", received(), stderr.String())
	}
	got := received()
	want := make([]string, total)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events = %q, want each of 0..%d once, in order\nstderr: %s", got, total-1, stderr.String())
	}
	if !strings.Contains(stderr.String(), "reconnected") {
		t.Fatalf("stderr does not show the reconnections: %s", stderr.String())
	}
}

// A subscription of several streams or a pattern names each event's
// stream, in text and in JSON.
func TestRunSubNamesStreams(t *testing.T) {
	script := func(n int, w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		subSSE(w, "retry: 5\nid: o.0\n\nid: o.1\nstream: prices/BTC\ndata: 1\n\nid: o.2\nevent: tick\nstream: prices/ETH\ndata: 2\n\n")
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--count", "2"}, "prices/BTC: 1\nprices/ETH: [tick] 2\n"},
		{[]string{"--count", "2", "--json"}, `{"id":"o.1","stream":"prices/BTC","event":"message","data":"1"}` + "\n" + `{"id":"o.2","stream":"prices/ETH","event":"tick","data":"2"}` + "\n"},
	} {
		srv := newSubServer(t, script)
		var stdout, stderr bytes.Buffer
		if err := RunSub(t.Context(), append([]string{"--url", srv.URL, "--stream", "prices/*"}, tc.args...), &stdout, &stderr); err != nil {
			t.Fatalf("err = %v; stderr: %s", err, stderr.String())
		}
		if stdout.String() != tc.want {
			t.Errorf("stdout = %q, want %q", stdout.String(), tc.want)
		}
		srv.mu.Lock()
		if q := srv.queries[0]; q != "/events?stream=prices%2F%2A" {
			t.Errorf("query %q", q)
		}
		srv.mu.Unlock()
	}
}

// --retain marks the event as the stream's retained state; --clear-retained
// clears it and takes no message.
func TestRunPubRetain(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"accepted":1,"origin":"o1","first":1,"last":1}`)
	}))
	defer srv.Close()
	for _, args := range [][]string{{"--retain", "state"}, {"--clear-retained"}} {
		var stdout, stderr bytes.Buffer
		if err := RunPub(t.Context(), append([]string{"--url", srv.URL, "--stream", "s"}, args...), strings.NewReader(""), &stdout, &stderr); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{`{"stream":"s","msg":"state","retain":true}`, `{"stream":"s","msg":"","retain":true}`}; len(bodies) != 2 || strings.TrimSpace(bodies[0]) != want[0] || strings.TrimSpace(bodies[1]) != want[1] {
		t.Fatalf("bodies %q, want %q", bodies, want)
	}
	var stderr bytes.Buffer
	err := RunPub(t.Context(), []string{"--url", srv.URL, "--stream", "s", "--clear-retained", "x"}, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--clear-retained takes no message") {
		t.Fatalf("--clear-retained with a message: %v", err)
	}
}
