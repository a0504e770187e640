package sser

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ClientConnectionHandler serves SSE subscriptions: GET with one or more
// stream query parameters. A Last-Event-ID header (or the lastEventID query
// parameter) resumes: the client gets exactly the events it missed that are
// still in history, then live ones. Connections end when ctx ends.
//
// A GET with Upgrade: websocket is a WebSocket subscription instead (see
// ws.go; Options.DisableWebSocket turns them off).
func (s *ServerImpl) ClientConnectionHandler(ctx context.Context) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if isWebSocket(r) {
			s.serveWS(ctx, w, r)
			return
		}
		s.serveSSE(ctx, w, r)
	}
}

func (s *ServerImpl) serveSSE(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if s.corsHeaders(w, r) && r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodGet {
		s.writeError(w, r, "events", http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; subscribe with GET", "GET, OPTIONS")
		return
	}
	release, ok := s.admit(w, r, "events")
	if !ok {
		return
	}
	// release and unsubscribe run when the handler returns, unless a
	// hijacked connection took them over.
	handedOff := false
	defer func() {
		if !handedOff {
			release()
		}
	}()
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, "events", http.StatusBadRequest, "malformed query string: "+err.Error(), "")
		return
	}
	streams := q[QueryParameterName]
	if len(streams) == 0 {
		s.writeError(w, r, "events", http.StatusBadRequest, ErrStreamNameRequired.Error()+": add ?stream=NAME (repeat it for several streams)", "")
		return
	}
	if len(streams) > s.opts.MaxStreamsPerConnection {
		s.m.refused.WithLabelValues("streams_per_connection").Inc()
		s.writeError(w, r, "events", http.StatusBadRequest, fmt.Sprintf("at most %d streams per subscription, got %d", s.opts.MaxStreamsPerConnection, len(streams)), "")
		return
	}
	streams, patterns, err := splitPatterns(streams)
	if err != nil {
		s.writeError(w, r, "events", http.StatusBadRequest, err.Error(), "")
		return
	}
	format := formatPlain
	switch v := q.Get(EnvelopeQueryParameterName); v {
	case "":
	case "json":
		format = formatEnvelope
	default:
		s.writeError(w, r, "events", http.StatusBadRequest, EnvelopeQueryParameterName+"="+strconv.Quote(v)+" is not supported: use "+EnvelopeQueryParameterName+"=json", "")
		return
	}
	noPreamble := s.opts.NoPreamble
	switch v := q.Get(PreambleQueryParameterName); v {
	case "":
	case "0", "1":
		noPreamble = v == "0"
	default:
		s.writeError(w, r, "events", http.StatusBadRequest, PreambleQueryParameterName+"="+strconv.Quote(v)+" is not supported: use 0 (no retry or id-only frame on connect) or 1", "")
		return
	}
	expires, principal, ok := s.authorizeSubscribe(w, r, streams)
	if !ok {
		return
	}
	if allow := s.opts.AllowStream; allow != nil {
		for _, name := range slices.Concat(streams, patterns) {
			if !allow(r, name) {
				// 204 is the SSE way to say "do not reconnect".
				s.m.badRequests.WithLabelValues("events", "204").Inc()
				s.log.V(1).Info("subscription refused", "stream", name, "remote", r.RemoteAddr)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
	}
	from, lastID, ok := s.resumePoint(w, r, q, "events")
	if !ok {
		return
	}
	if _, ok := w.(http.Flusher); !ok {
		s.writeError(w, r, "events", http.StatusInternalServerError, "streaming is not supported by this connection", "")
		return
	}

	// A replica still copying history from a peer cannot place the client
	// yet: wait (readiness keeps a Service's traffic away meanwhile).
	if !s.awaitWarm(ctx, w, r, "events") {
		return
	}
	hijack := s.canHijack(ctx, w, r)
	var sub *subscriber
	if hijack {
		sub = newConnSubscriber(streams, s.opts.SubscriberQueue)
		sub.group = s.writers.joinGroup(ctx)
	} else {
		sub = newSubscriber(streams, s.opts.SubscriberQueue)
	}
	sub.noPreamble = noPreamble
	if principal != nil {
		sub.selectSet(patterns, format, principal.Allows, strings.Join(principal.Grants, "\x00"))
	} else {
		sub.selectSet(patterns, format, nil, "")
	}
	compress := s.opts.Compression == CompressionGzip
	if compress && acceptsGzip(strings.Join(r.Header.Values("Accept-Encoding"), ",")) {
		sub.gz = &gzConn{}
	}
	res, ok := s.hub.subscribe(sub, from, lastID != "", s.opts.Retry.Milliseconds())
	if !ok || res.truncated {
		if hijack {
			s.writers.leaveGroup(sub.group)
		}
	}
	if !ok {
		s.writeError(w, r, "events", http.StatusServiceUnavailable, "server is shutting down", "")
		return
	}
	defer func() {
		if !handedOff {
			s.hub.unsubscribe(sub)
		}
	}()
	s.m.connectionsTotal.Inc()
	if sub.compressed() {
		s.m.connectionsGzip.Inc()
	}
	if res.resumed {
		result := "exact"
		if res.lost {
			result = "lost"
		}
		s.m.resumes.WithLabelValues(result).Inc()
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	if compress {
		h.Add("Vary", "Accept-Encoding")
	}
	if sub.compressed() {
		h.Set("Content-Encoding", "gzip")
	}
	if res.resumed {
		if res.lost {
			h.Set("X-Sser-Resume", "lost")
		} else {
			h.Set("X-Sser-Resume", "exact")
		}
	}
	if res.truncated {
		h.Set("X-Sser-Replay", "partial")
	}
	if hijack && !res.truncated {
		if handedOff = s.serveHijacked(w, sub, release, expires); handedOff {
			return
		}
		s.writers.leaveGroup(sub.group)
		sub.useChannels()
	}
	w.WriteHeader(http.StatusOK)
	if res.truncated {
		// The oldest part of what the client missed, then the connection
		// ends: it resumes from the last event for the rest.
		s.newConnWriter(w, sub).finish(sub.takeBatch())
		return
	}
	s.writeLoop(ctx, w, r, sub, expires)
}

// writeLoop is the subscriber's one writer: it writes everything queued and
// flushes once, sends heartbeats while idle, and returns when the client
// goes, the subscriber is closed, or ctx ends.
//
// The heartbeat ticker runs at half the heartbeat interval and is never
// reset: a tick sends a heartbeat when nothing was written since the tick
// before, so a connection is never silent for longer than the interval,
// and a busy one costs no timer work per write.
func (s *ServerImpl) writeLoop(ctx context.Context, w http.ResponseWriter, r *http.Request, sub *subscriber, expires time.Time) {
	cw := s.newConnWriter(w, sub)
	heartbeat := time.NewTicker(max(s.opts.Heartbeat/2, time.Millisecond))
	defer heartbeat.Stop()
	var maxAge <-chan time.Time
	if d := s.opts.MaxConnectionTime; d > 0 {
		t := time.NewTimer(d - rand.N(d/5+1))
		defer t.Stop()
		maxAge = t.C
	}
	expired, stopExpiry := expiryTimer(expires)
	defer stopExpiry()
	wrote := false
	for {
		select {
		case <-sub.wake:
			b := sub.takeBatch()
			ok := cw.write(b)
			sub.recycle(b)
			if !ok {
				return
			}
			s.m.observeDelivery(b.born)
			wrote = true
		case <-heartbeat.C:
			if !wrote && !cw.write(batch{frames: [][]byte{heartbeatFrame}}) {
				return
			}
			wrote = false
		case <-sub.done:
			var last batch
			if sub.closeReason() == reasonDrain {
				// Let the client have what was queued before it goes.
				last = sub.takeBatch()
			}
			cw.finish(last)
			return
		case <-maxAge:
			s.hub.closeSubscriber(sub, reasonMaxAge)
			cw.finish(sub.takeBatch())
			return
		case <-expired:
			s.hub.closeSubscriber(sub, reasonMaxAge)
			last := sub.takeBatch()
			last.frames = append(last.frames, expiredFrame)
			cw.finish(last)
			return
		case <-r.Context().Done():
			return
		case <-ctx.Done():
			cw.finish(batch{})
			return
		}
	}
}

// connWriter writes batches of frames to one client. The connection's
// write deadline is moved only when less than half the write timeout is
// left, so a busy connection does not reset a timer on every write: each
// batch gets between half and all of the write timeout, and a client that
// stops reading is found within it.
type connWriter struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	timeout  time.Duration
	deadline time.Time
	m        *metrics
	// gz is the response's gzip stream when it is compressed.
	gz *gzStream
}

func (s *ServerImpl) newConnWriter(w http.ResponseWriter, sub *subscriber) *connWriter {
	cw := &connWriter{w: w, rc: http.NewResponseController(w), timeout: s.opts.WriteTimeout, m: s.m}
	if sub.compressed() {
		cw.gz = &sub.gz.z
	}
	return cw
}

// write writes a batch and flushes; false when the client is gone.
func (c *connWriter) write(b batch) bool { return c.send(b, false) }

// finish writes a last batch, and ends a compressed stream: net/http ends
// the body itself when the handler returns.
func (c *connWriter) finish(b batch) bool { return c.send(b, true) }

func (c *connWriter) send(b batch, last bool) bool {
	if c.gz == nil && len(b.frames) == 0 {
		return true
	}
	if now := time.Now(); c.deadline.Sub(now) < c.timeout/2 {
		c.deadline = now.Add(c.timeout)
		_ = c.rc.SetWriteDeadline(c.deadline)
	}
	if c.gz == nil {
		return writeFrames(c.w, c.rc, c.m, b.frames)
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	z := c.gz.encodeBatch(bp, b.frames, b.ents, last)
	return writeFrames(c.w, c.rc, c.m, [][]byte{z})
}

// writeFrames writes frames to the client and flushes; false when the
// client is gone. Frames are joined into writes of up to writeChunk bytes:
// frame by frame, net/http's small buffer would split a burst into many
// chunks and syscalls, and joined whole, a replay of MaxReplayBytes would
// cost that much memory per connection (a client that never reads would
// hold it for the write timeout). The write deadline covers the whole batch,
// so a client reading a trickle cannot stretch it.
func writeFrames(w http.ResponseWriter, rc *http.ResponseController, m *metrics, frames [][]byte) bool {
	written := 0
	if len(frames) == 1 {
		n, err := w.Write(frames[0])
		if err != nil {
			return false
		}
		written = n
	} else {
		n, err := writeJoined(w, frames)
		if err != nil {
			return false
		}
		written = n
	}
	if err := rc.Flush(); err != nil {
		return false
	}
	m.bytesWritten.Add(float64(written))
	return true
}

// writeJoined writes frames joined into writes of up to writeChunk bytes
// (a larger frame alone), with a buffer from batchPool: the bytes written.
func writeJoined(w io.Writer, frames [][]byte) (int, error) {
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	written := 0
	for i := 0; i < len(frames); {
		b := (*bp)[:0]
		for ; i < len(frames) && (len(b) == 0 || len(b)+len(frames[i]) <= writeChunk); i++ {
			b = append(b, frames[i]...)
		}
		if cap(b) <= maxPooledBatch {
			*bp = b[:0]
		}
		n, err := w.Write(b)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// batchPool holds the buffers a writer joins a batch of frames into.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const maxPooledBatch = 1 << 20

// writeChunk is the most bytes joined into one write (one frame larger
// than it is written alone).
const writeChunk = 64 << 10

// corsHeaders sets the CORS answer for an allowed Origin; true when set.
func (s *ServerImpl) corsHeaders(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(s.opts.CORSOrigins) == 0 {
		return false
	}
	h := w.Header()
	switch {
	case origin != "null" && slices.Contains(s.opts.CORSOrigins, origin):
		// A listed origin may send its cookies (a same-site session).
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Allow-Credentials", "true")
	case slices.Contains(s.opts.CORSOrigins, "*"):
		// Any origin, but never with credentials: a page anywhere must not
		// read a stream with a visitor's cookies.
		h.Set("Access-Control-Allow-Origin", "*")
	default:
		return false
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Last-Event-ID, Cache-Control, Accept")
		h.Set("Access-Control-Max-Age", "600")
	}
	return true
}

// splitPatterns separates a subscription's stream parameters into stream
// names and patterns, sorted and without repeats, and checks both.
func splitPatterns(params []string) (names, patterns []string, err error) {
	for _, p := range params {
		if IsStreamPattern(p) {
			if err := ValidateStreamPattern(p); err != nil {
				return nil, nil, fmt.Errorf("%w: %q (a glob over stream names: * and ? match within one '/' segment, [a-z] a class)", err, p)
			}
			patterns = append(patterns, p)
			continue
		}
		if err := ValidateStreamName(p); err != nil {
			return nil, nil, err
		}
		names = append(names, p)
	}
	slices.Sort(names)
	slices.Sort(patterns)
	return slices.Compact(names), slices.Compact(patterns), nil
}

// admit runs the checks every subscription passes first, SSE or
// WebSocket: memory shedding and the connection caps. It returns the
// connection slot's release, or false when it answered the request itself.
func (s *ServerImpl) admit(w http.ResponseWriter, r *http.Request, endpoint string) (func(), bool) {
	if s.memory.over.Load() {
		s.refuse(w, r, endpoint, "memory", http.StatusServiceUnavailable, time.Second, "this replica is shedding load (memory above its watermark); retry")
		return nil, false
	}
	release, limit, wait := s.conns.acquire(s.conns.clientIP(r), time.Now())
	if release == nil {
		status := http.StatusServiceUnavailable
		if limit == "connections_per_ip" {
			status = http.StatusTooManyRequests
		}
		s.refuse(w, r, endpoint, limit, status, wait, "too many subscriptions ("+strings.ReplaceAll(limit, "_", " ")+"); retry later")
		return nil, false
	}
	return release, true
}

// resumePoint reads the position a subscription resumes from: the
// Last-Event-ID header, else the lastEventID query parameter. lastID is
// empty for a new subscription; false when it answered a bad id.
func (s *ServerImpl) resumePoint(w http.ResponseWriter, r *http.Request, q url.Values, endpoint string) (from position, lastID string, ok bool) {
	lastID = r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = q.Get(LastEventIDQueryParameterName)
	}
	from, err := parsePosition(strings.TrimSpace(lastID))
	if err != nil {
		s.writeError(w, r, endpoint, http.StatusBadRequest, "invalid Last-Event-ID (not an id this service wrote): "+err.Error(), "")
		return nil, "", false
	}
	return from, lastID, true
}

// awaitWarm waits while the replica still copies history from a peer: it
// cannot place a client before. False when the client left or the server
// stops (answered).
func (s *ServerImpl) awaitWarm(ctx context.Context, w http.ResponseWriter, r *http.Request, endpoint string) bool {
	select {
	case <-s.warmCh:
		return true
	case <-r.Context().Done():
		return false
	case <-ctx.Done():
		s.writeError(w, r, endpoint, http.StatusServiceUnavailable, "server is shutting down", "")
		return false
	}
}
