package sser

import (
	_ "embed"
	"net/http"
	"time"

	"github.com/sser-dev/sser/internal/csp"
)

// statusPage is the status page: one self-contained file whose script
// follows StatusEventsURLPath and draws what it says.
//
//go:embed status.html
var statusPage []byte

// statusCSP allows the page nothing but its own inline style and script
// (by hash) and requests to its own origin.
var statusCSP = csp.Inline(statusPage)

// maxStatusStreams bounds the status streams open at once: they are for
// people looking at a page, and each costs a goroutine.
const maxStatusStreams = 32

func (s *ServerImpl) serveStatusPage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(statusPage)
}

func (s *ServerImpl) serveStatusJSON(w http.ResponseWriter, _ *http.Request) {
	_, b := s.status.snapshot(time.Now())
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}

// serveStatusEvents streams the status as SSE: a snapshot a second (each
// is also the stream's heartbeat) until the client goes, or the replica
// drains (after a snapshot saying so: the page's EventSource then comes
// back after the retry, a second, and gets one snapshot each time) or
// stops.
func (s *ServerImpl) serveStatusEvents(w http.ResponseWriter, r *http.Request) {
	if n := s.status.streams.Add(1); n > maxStatusStreams {
		s.status.streams.Add(-1)
		s.refuse(w, r, "status", "status_streams", http.StatusTooManyRequests, time.Second, "too many status streams open; retry later")
		return
	}
	defer s.status.streams.Add(-1)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	send := func(prefix string) bool {
		_, b := s.status.snapshot(time.Now())
		_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		frame := make([]byte, 0, len(prefix)+len(b)+8)
		frame = append(append(append(append(frame, prefix...), "data: "...), b...), "\n\n"...)
		if _, err := w.Write(frame); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("retry: 1000\n") {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for !s.draining.Load() && !s.stopped.Load() {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if !send("") {
				return
			}
		}
	}
}
