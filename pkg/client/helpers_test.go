package client

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait in these tests; they poll or receive, never
// sleep.
const waitTimeout = 10 * time.Second

// request is what the fake server saw of one connection.
type request struct {
	n      int
	method string
	path   string
	header http.Header
	body   string
}

// fakeServer is a real local HTTP server whose n-th connection (from 0) is
// answered by handle.
type fakeServer struct {
	*httptest.Server
	reqs chan request
	stop chan struct{}

	mu sync.Mutex
	n  int
}

func newFakeServer(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) *fakeServer {
	t.Helper()
	fs := &fakeServer{reqs: make(chan request, 1000), stop: make(chan struct{})}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		n := fs.n
		fs.n++
		fs.mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		fs.reqs <- request{n: n, method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: string(b)}
		handle(n, w, r)
	}))
	t.Cleanup(func() {
		close(fs.stop)
		fs.Close()
	})
	return fs
}

// hold keeps a streaming answer open until the client or the test goes.
func (fs *fakeServer) hold(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-fs.stop:
	}
}

func (fs *fakeServer) count() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.n
}

func (fs *fakeServer) nextRequest(t *testing.T) request {
	t.Helper()
	select {
	case r := <-fs.reqs:
		return r
	case <-time.After(waitTimeout):
		t.Fatal("no request reached the server")
		return request{}
	}
}

// sse starts an event-stream answer and writes frames.
func sse(w http.ResponseWriter, frames ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	for _, f := range frames {
		fmt.Fprint(w, f)
	}
	w.(http.Flusher).Flush()
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return v
	case <-time.After(waitTimeout):
		t.Fatal("nothing received in time")
	}
	var zero T
	return zero
}

func waitDone(t *testing.T, s *Stream) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(waitTimeout):
		t.Fatal("stream did not stop")
	}
}

// fast makes reconnections quick and jitter-free for tests that are not
// about the delays themselves.
func fast() Option {
	return func(o *options) {
		o.initialDelay, o.maxDelay, o.jitter = time.Millisecond, 5*time.Millisecond, 0
	}
}

func withDelayHook(f func(attempt int, d time.Duration)) Option {
	return func(o *options) { o.onDelay = f }
}

func withRand(f func() float64) Option {
	return func(o *options) { o.rnd = f }
}

func newTestStream(t *testing.T, url string, opts ...Option) *Stream {
	t.Helper()
	s, err := NewStream(t.Context(), url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
