package client

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestNoGoroutineLeftAfterClose closes streams in every state (connected,
// blocked handing over an event, inside a handler, waiting out a backoff,
// mid-dial) and checks that nothing of theirs keeps running.
func TestNoGoroutineLeftAfterClose(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("mode") {
		case "fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			sse(w, "data: a\n\ndata: b\n\n")
			<-r.Context().Done()
		}
	})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	before := goleak.IgnoreCurrent()

	inHandler := make(chan struct{})
	streams := []*Stream{}
	add := func(query string, opts ...Option) *Stream {
		s, err := NewStream(t.Context(), fs.URL+"/?"+query, append([]Option{WithHTTPClient(hc)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
		return s
	}
	connected := add("mode=ok", WithBufferSize(0))
	recv(t, connected.Events()) // now blocked handing over b
	add("mode=ok", WithHandler(func(ctx context.Context, ev Event) error {
		close(inHandler)
		<-ctx.Done()
		return nil
	}))
	<-inHandler
	delays := make(chan time.Duration, 1)
	add("mode=fail", WithBackoff(time.Hour, time.Hour, 0), withDelayHook(func(_ int, d time.Duration) { delays <- d }))
	recv(t, delays)
	add("mode=ok", WithReadTimeout(time.Hour)) // closed at once, wherever it is
	for _, s := range streams {
		_ = s.Close()
	}
	tr.CloseIdleConnections()
	goleak.VerifyNone(t, before)
}
