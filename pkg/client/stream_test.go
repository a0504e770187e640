package client

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestStreamRequest(t *testing.T) {
	tests := []struct {
		name       string
		opts       []Option
		wantMethod string
		wantBody   string
		wantLastID string
		wantHeader map[string]string
	}{
		{
			name:       "defaults",
			wantMethod: http.MethodGet,
			wantHeader: map[string]string{"Accept": "text/event-stream", "Cache-Control": "no-cache"},
		},
		{
			name:       "method, body, headers and initial last event id",
			opts:       []Option{WithMethod(http.MethodPost), WithBody([]byte(`{"q":1}`)), WithHeader("Authorization", "Bearer t"), WithLastEventID("v:7")},
			wantMethod: http.MethodPost,
			wantBody:   `{"q":1}`,
			wantLastID: "v:7",
			wantHeader: map[string]string{"Authorization": "Bearer t", "Accept": "text/event-stream"},
		},
		{
			name: "request editor",
			opts: []Option{WithRequestEditor(func(r *http.Request) error {
				r.Header.Set("X-Token", "fresh")
				return nil
			})},
			wantMethod: http.MethodGet,
			wantHeader: map[string]string{"X-Token": "fresh"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				sse(w, "data: hi\n\n")
				fs := r.Context()
				<-fs.Done()
			})
			s := newTestStream(t, fs.URL+"/events?stream=a", tt.opts...)
			if ev := recv(t, s.Events()); ev != msg(tt.wantLastID, "hi") {
				t.Fatalf("event = %+v", ev)
			}
			req := fs.nextRequest(t)
			if req.method != tt.wantMethod || req.body != tt.wantBody {
				t.Fatalf("request %s %q, want %s %q", req.method, req.body, tt.wantMethod, tt.wantBody)
			}
			if got := req.header.Get("Last-Event-ID"); got != tt.wantLastID {
				t.Fatalf("Last-Event-ID = %q, want %q", got, tt.wantLastID)
			}
			for k, v := range tt.wantHeader {
				if got := req.header.Get(k); got != v {
					t.Fatalf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestStreamResumesAfterDrop(t *testing.T) {
	// Connection 0 sends an event, then the id-only frame sser sends, then
	// drops; connection 1 must resume from the id-only frame's id.
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 0:
			sse(w, "retry: 1\nid: p1\ndata: a\n\nid: p2\n\n")
		case 1:
			sse(w, "data: b\n\nid: p3\ndata: c\n\n")
			<-r.Context().Done()
		}
	})
	s := newTestStream(t, fs.URL, WithMethod(http.MethodPost), WithBody([]byte("body")), fast())
	var got []Event
	for range 3 {
		got = append(got, recv(t, s.Events()))
	}
	want := []Event{msg("p1", "a"), msg("p2", "b"), msg("p3", "c")}
	if !slices.Equal(got, want) {
		t.Fatalf("events = %+v, want %+v", got, want)
	}
	r0, r1 := fs.nextRequest(t), fs.nextRequest(t)
	if id := r0.header.Get("Last-Event-ID"); id != "" {
		t.Fatalf("first connection sent Last-Event-ID %q", id)
	}
	if id := r1.header.Get("Last-Event-ID"); id != "p2" {
		t.Fatalf("reconnect sent Last-Event-ID %q, want p2", id)
	}
	if r1.body != "body" || r1.method != http.MethodPost {
		t.Fatalf("reconnect sent %s %q, want the body again", r1.method, r1.body)
	}
	_ = s.Close() // LastEventID moves just after the channel hand-over
	if id := s.LastEventID(); id != "p3" {
		t.Fatalf("LastEventID = %q", id)
	}
}

func TestStreamFollowsRedirects(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new", http.StatusTemporaryRedirect)
			return
		}
		sse(w, "id: "+r.Header.Get("Last-Event-ID")+"x\ndata: "+r.Method+" "+r.URL.Path+"\n\n")
		if n > 2 {
			<-r.Context().Done()
		}
	})
	s := newTestStream(t, fs.URL+"/old", WithMethod(http.MethodPost), WithBody([]byte("b")), WithLastEventID("0"), fast())
	for _, want := range []Event{msg("0x", "POST /new"), msg("0xx", "POST /new")} {
		if ev := recv(t, s.Events()); ev != want {
			t.Fatalf("event = %+v, want %+v", ev, want)
		}
	}
	for range 4 {
		if r := fs.nextRequest(t); r.body != "b" {
			t.Fatalf("request %d to %s had body %q", r.n, r.path, r.body)
		}
	}
}

func TestStreamBackoffDelays(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		script    func(n int, w http.ResponseWriter, r *http.Request)
		opts      []Option
		rnd       float64
		wantDelay []time.Duration
	}{
		{
			name:      "exponential to the cap",
			script:    func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) },
			opts:      []Option{WithBackoff(10*ms, 80*ms, 0)},
			wantDelay: []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 80 * ms, 80 * ms},
		},
		{
			name:      "full jitter at r=0.999 halves each delay",
			script:    func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) },
			opts:      []Option{WithBackoff(100*ms, 400*ms, 0.5)},
			rnd:       0.999,
			wantDelay: []time.Duration{50050 * time.Microsecond, 100100 * time.Microsecond, 200200 * time.Microsecond, 200200 * time.Microsecond},
		},
		{
			name:      "server retry is the base",
			script:    func(n int, w http.ResponseWriter, r *http.Request) { sse(w, "retry: 7\n") },
			opts:      []Option{WithBackoff(time.Hour, time.Hour, 0)},
			wantDelay: []time.Duration{7 * ms, 14 * ms, 28 * ms},
		},
		{
			name: "healthy connection resets the backoff",
			script: func(n int, w http.ResponseWriter, r *http.Request) {
				if n%3 == 2 {
					sse(w, "data: x\n\n")
					return
				}
				w.WriteHeader(http.StatusInternalServerError)
			},
			opts:      []Option{WithBackoff(ms, 100*ms, 0), WithResetInterval(0)},
			wantDelay: []time.Duration{ms, 2 * ms, ms, 2 * ms, 4 * ms, ms},
		},
		{
			name: "short connections do not reset the backoff",
			script: func(n int, w http.ResponseWriter, r *http.Request) {
				if n%3 == 2 {
					sse(w, "data: x\n\n")
					return
				}
				w.WriteHeader(http.StatusInternalServerError)
			},
			opts:      []Option{WithBackoff(ms, 100*ms, 0), WithResetInterval(time.Hour)},
			wantDelay: []time.Duration{ms, 2 * ms, 4 * ms, 8 * ms, 16 * ms, 32 * ms},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, tt.script)
			delays := make(chan time.Duration, 100)
			opts := append(tt.opts,
				withRand(func() float64 { return tt.rnd }),
				withDelayHook(func(_ int, d time.Duration) { delays <- d }),
				WithHandler(func(context.Context, Event) error { return nil }))
			s := newTestStream(t, fs.URL, opts...)
			for i, want := range tt.wantDelay {
				if got := recv(t, delays); got != want {
					t.Fatalf("delay %d = %v, want %v", i, got, want)
				}
			}
			_ = s.Close()
		})
	}
}

func TestBackoffDelayBounds(t *testing.T) {
	const base, maxD, jitter = 100 * time.Millisecond, 3 * time.Second, 0.5
	for attempt := range 12 {
		full := min(base<<attempt, maxD)
		for _, r := range []float64{0, 0.25, 0.5, 0.999999} {
			d := backoffDelay(base, maxD, jitter, attempt, 0, r)
			if d > full || d < time.Duration(float64(full)*(1-jitter)) {
				t.Fatalf("attempt %d r %v: delay %v outside [%v, %v]", attempt, r, d, time.Duration(float64(full)*(1-jitter)), full)
			}
		}
	}
	tests := []struct {
		name                    string
		base, maxDelay, retryAf time.Duration
		attempt                 int
		jitter, r               float64
		want                    time.Duration
	}{
		{name: "retry zero is immediate", base: 0, maxDelay: time.Second, want: 0},
		{name: "retry zero then backs off", base: 0, maxDelay: time.Second, attempt: 2, want: 4 * minBackoffBase},
		{name: "server retry above max is kept", base: time.Hour, maxDelay: time.Second, attempt: 3, want: time.Hour},
		{name: "huge attempt does not overflow", base: time.Second, maxDelay: time.Duration(1<<63 - 1), attempt: 200, want: time.Duration(1<<63 - 1)},
		{name: "retry-after raises the delay", base: time.Second, maxDelay: time.Minute, retryAf: 10 * time.Second, jitter: 0.5, r: 0.9, want: 10 * time.Second},
		{name: "retry-after is capped", base: time.Second, maxDelay: time.Minute, retryAf: time.Hour, want: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := backoffDelay(tt.base, tt.maxDelay, tt.jitter, tt.attempt, tt.retryAf, tt.r); got != tt.want {
				t.Fatalf("delay = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStreamJitterSpread(t *testing.T) {
	// With the real random source, delays fall in the jitter window and
	// are not all the same.
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	delays := make(chan time.Duration, 100)
	s := newTestStream(t, fs.URL, WithBackoff(4*time.Millisecond, 4*time.Millisecond, 0.5),
		withDelayHook(func(_ int, d time.Duration) { delays <- d }))
	seen := map[time.Duration]bool{}
	for range 20 {
		d := recv(t, delays)
		if d < 2*time.Millisecond || d > 4*time.Millisecond {
			t.Fatalf("delay %v outside [2ms, 4ms]", d)
		}
		seen[d] = true
	}
	_ = s.Close()
	if len(seen) < 2 {
		t.Fatalf("20 delays took %d distinct values; jitter is not random", len(seen))
	}
}

func TestStreamRetryAfterHonoured(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	delays := make(chan time.Duration, 10)
	s := newTestStream(t, fs.URL, WithBackoff(time.Millisecond, time.Minute, 0.5),
		withDelayHook(func(_ int, d time.Duration) { delays <- d }))
	if d := recv(t, delays); d != 2*time.Second {
		t.Fatalf("delay = %v, want the server's Retry-After 2s", d)
	}
	_ = s.Close()
}

func TestStreamReadTimeout(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		// Each connection sends one event and then goes silent.
		sse(w, "id: "+string(rune('a'+n))+"\ndata: x\n\n")
		<-r.Context().Done()
	})
	errs := make(chan error, 10)
	s := newTestStream(t, fs.URL, fast(), WithReadTimeout(50*time.Millisecond),
		WithErrorHandler(func(_ context.Context, err error) bool { errs <- err; return true }))
	recv(t, s.Events())
	if err := recv(t, errs); !errors.Is(err, ErrReadTimeout) {
		t.Fatalf("error = %v, want ErrReadTimeout", err)
	}
	if ev := recv(t, s.Events()); ev.ID != "b" {
		t.Fatalf("after the timeout got %+v, want the second connection's event", ev)
	}
	if r := fs.nextRequest(t); r.header.Get("Last-Event-ID") != "" {
		t.Fatal("first request had an id")
	}
	if r := fs.nextRequest(t); r.header.Get("Last-Event-ID") != "a" {
		t.Fatalf("reconnect Last-Event-ID = %q, want a", r.header.Get("Last-Event-ID"))
	}
}

func TestStreamReadTimeoutExcludesHandlerTime(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		sse(w, "data: 1\n\n", "data: 2\n\n")
		<-r.Context().Done()
	})
	got := make(chan Event, 10)
	s := newTestStream(t, fs.URL, fast(), WithReadTimeout(200*time.Millisecond),
		WithHandler(func(ctx context.Context, ev Event) error {
			if ev.Data == "1" {
				// A slow handler: three read timeouts long.
				select {
				case <-time.After(600 * time.Millisecond):
				case <-ctx.Done():
				}
			}
			got <- ev
			return nil
		}))
	recv(t, got)
	recv(t, got)
	if n := fs.count(); n != 1 {
		t.Fatalf("%d connections; the handler's time counted as a read timeout", n)
	}
	_ = s.Close()
}

func TestStreamStops(t *testing.T) {
	handlerErr := errors.New("handler says stop")
	tests := []struct {
		name    string
		script  func(n int, w http.ResponseWriter, r *http.Request)
		opts    []Option
		wantErr error
		wantMsg string
	}{
		{
			name:    "204 stops even when the error handler would retry",
			script:  func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
			opts:    []Option{WithErrorHandler(func(context.Context, error) bool { return true })},
			wantErr: ErrNoContent,
		},
		{
			name: "401 stops by default",
			script: func(n int, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte(`{"error":"bad token"}`))
			},
			wantMsg: "bad token",
		},
		{
			name:   "error handler stops on 503",
			script: func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) },
			opts: []Option{WithErrorHandler(func(_ context.Context, err error) bool {
				var se *StatusError
				return !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable
			})},
			wantMsg: "",
		},
		{
			name: "wrong content type",
			script: func(n int, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				_, _ = w.Write([]byte("<html>"))
			},
			wantErr: ErrContentType,
		},
		{
			name:    "handler error",
			script:  func(n int, w http.ResponseWriter, r *http.Request) { sse(w, "data: x\n\n") },
			opts:    []Option{WithHandler(func(context.Context, Event) error { return handlerErr })},
			wantErr: handlerErr,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, tt.script)
			s := newTestStream(t, fs.URL, append([]Option{fast()}, tt.opts...)...)
			waitDone(t, s)
			err := s.Err()
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil {
				var se *StatusError
				if !errors.As(err, &se) || se.Message != tt.wantMsg {
					t.Fatalf("Err = %v, want a StatusError with message %q", err, tt.wantMsg)
				}
			}
			if n := fs.count(); n != 1 {
				t.Fatalf("%d connections, want 1", n)
			}
			if _, ok := <-s.Events(); ok {
				t.Fatal("Events not closed")
			}
		})
	}
}

func TestStreamRetriesServerErrorsAndDrops(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 0:
			w.WriteHeader(http.StatusBadGateway)
		case 1:
			// Hijack and drop mid-event.
			sse(w, "id: 1\ndata: a\n\nid: 2\ndata: partial")
		case 2:
			// Drop inside the response headers (an idle connection closed
			// before any answer would be retried by net/http itself).
			conn, _, _ := w.(http.Hijacker).Hijack()
			_, _ = conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/ev"))
			_ = conn.Close()
		default:
			sse(w, "data: b\n\n")
			<-r.Context().Done()
		}
	})
	var errs []error
	var mu sync.Mutex
	s := newTestStream(t, fs.URL, fast(), WithErrorHandler(func(_ context.Context, err error) bool {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		return true
	}))
	if ev := recv(t, s.Events()); ev != msg("1", "a") {
		t.Fatalf("event %+v", ev)
	}
	if ev := recv(t, s.Events()); ev != msg("1", "b") {
		t.Fatalf("event %+v; the unterminated event must be discarded and the id not moved", ev)
	}
	mu.Lock()
	defer mu.Unlock()
	var se *StatusError
	if len(errs) != 3 || !errors.As(errs[0], &se) || !errors.Is(errs[1], ErrStreamEnded) {
		t.Fatalf("errors = %v", errs)
	}
}

func TestStreamRestart(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		sse(w, "id: c"+string(rune('0'+n))+"\ndata: x\n\n")
		fs := r.Context()
		<-fs.Done()
	})
	s := newTestStream(t, fs.URL, WithBackoff(time.Hour, time.Hour, 0))
	recv(t, s.Events())
	fs.nextRequest(t)
	s.Restart()
	if ev := recv(t, s.Events()); ev.ID != "c1" {
		t.Fatalf("after Restart got %+v", ev)
	}
	if r := fs.nextRequest(t); r.header.Get("Last-Event-ID") != "c0" {
		t.Fatalf("Restart resumed from %q", r.header.Get("Last-Event-ID"))
	}
}

func TestStreamRestartCutsBackoff(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		sse(w, "data: back\n\n")
		<-r.Context().Done()
	})
	delays := make(chan time.Duration, 1)
	s := newTestStream(t, fs.URL, WithBackoff(time.Hour, time.Hour, 0), withDelayHook(func(_ int, d time.Duration) { delays <- d }))
	recv(t, delays) // now waiting an hour
	s.Restart()
	if ev := recv(t, s.Events()); ev.Data != "back" {
		t.Fatalf("got %+v", ev)
	}
}

func TestStreamCloseAndRestartConcurrently(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		sse(w, "data: x\n\n")
		<-r.Context().Done()
	})
	s := newTestStream(t, fs.URL, fast(), WithBufferSize(0))
	recv(t, s.Events())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s.Restart()
			_ = s.Close()
			s.Restart()
			_ = s.Close()
		})
	}
	wg.Wait()
	waitDone(t, s)
	if !errors.Is(s.Err(), ErrClosed) {
		t.Fatalf("Err = %v, want ErrClosed", s.Err())
	}
	for range s.Events() {
	}
}

func TestStreamCloseWhileBlockedKeepsResumePoint(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		sse(w, "id: 1\ndata: a\n\nid: 2\ndata: b\n\n")
		<-r.Context().Done()
	})
	s := newTestStream(t, fs.URL, WithBufferSize(0))
	if ev := recv(t, s.Events()); ev.ID != "1" {
		t.Fatalf("got %+v", ev)
	}
	// Event 2 is parsed but nobody takes it; Close must not count it.
	_ = s.Close()
	if id := s.LastEventID(); id != "1" {
		t.Fatalf("LastEventID = %q after Close, want 1 (event 2 was never delivered)", id)
	}
}

func TestStreamContextEnds(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		sse(w)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	s, err := NewStream(ctx, fs.URL)
	if err != nil {
		t.Fatal(err)
	}
	fs.nextRequest(t)
	cancel()
	waitDone(t, s)
	if !errors.Is(s.Err(), context.Canceled) {
		t.Fatalf("Err = %v", s.Err())
	}
}

func TestNewStreamInvalid(t *testing.T) {
	tests := []struct {
		name string
		url  string
		opts []Option
	}{
		{name: "scheme", url: "ftp://x"},
		{name: "unparsable", url: "http://[::1"},
		{name: "jitter", url: "http://x", opts: []Option{WithBackoff(time.Second, time.Second, 2)}},
		{name: "max delay", url: "http://x", opts: []Option{WithBackoff(time.Second, 0, 0)}},
		{name: "read timeout", url: "http://x", opts: []Option{WithReadTimeout(-1)}},
		{name: "client", url: "http://x", opts: []Option{WithHTTPClient(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewStream(t.Context(), tt.url, tt.opts...); !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("err = %v, want ErrInvalidOption", err)
			}
		})
	}
}

func TestStreamComments(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		sse(w, ": heartbeat\n\ndata: x\n\n")
		<-r.Context().Done()
	})
	var comments atomic.Value
	s := newTestStream(t, fs.URL, WithCommentHandler(func(c string) { comments.Store(c) }),
		WithConnectHandler(func(resp *http.Response) {
			if resp.StatusCode != http.StatusOK {
				t.Errorf("connect handler saw %d", resp.StatusCode)
			}
		}))
	recv(t, s.Events())
	if c, _ := comments.Load().(string); c != "heartbeat" {
		t.Fatalf("comment = %q", c)
	}
}
