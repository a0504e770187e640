package sser

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// InternalHandler serves the internal endpoints: peer delivery, publish,
// history, probes, metrics and the status page. Start serves it on InternalAddr; mount it
// yourself when InternalAddr is empty.
func (s *ServerImpl) InternalHandler() http.Handler { return s.handler }

// MetricsHandler serves this server's Prometheus metrics.
func (s *ServerImpl) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.m.registry, promhttp.HandlerOpts{})
}

func (s *ServerImpl) internalRouter() http.Handler {
	peer := s.credential("peer", s.opts.PeerToken)
	pub := s.credential("publish", s.opts.PublishToken)
	// SkipClean: a POST to an unclean path is a 404, never a 301 that
	// clients re-send as GET.
	r := mux.NewRouter().SkipClean(true)
	r.Handle(PeerEndpointURLPath, peer("send", s.only("send", s.serveSend, http.MethodPost)))
	r.Handle(PublishURLPath, s.publisherAuth(pub)("publish", s.only("publish", s.servePublish, http.MethodPost)))
	r.Handle(TicketsURLPath, pub("tickets", s.only("tickets", s.serveTickets, http.MethodPost)))
	r.HandleFunc(HistoryURLPath, peer("history", s.only("history", s.serveHistory, http.MethodGet)))
	r.HandleFunc(OriginsURLPath, peer("origins", s.only("origins", s.serveOrigins, http.MethodGet)))
	r.HandleFunc("/healthz", s.only("healthz", s.serveHealthz, http.MethodGet, http.MethodHead))
	r.HandleFunc("/readyz", s.only("readyz", s.serveReadyz, http.MethodGet, http.MethodHead))
	r.Handle("/metrics", s.only("metrics", s.MetricsHandler().ServeHTTP, http.MethodGet, http.MethodHead))
	r.HandleFunc(StatusPagePath, s.only("status", s.serveStatusPage, http.MethodGet, http.MethodHead))
	r.HandleFunc(StatusURLPath, s.only("status", s.serveStatusJSON, http.MethodGet, http.MethodHead))
	r.HandleFunc(StatusEventsURLPath, s.only("status", s.serveStatusEvents, http.MethodGet))
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.writeError(w, req, "other", http.StatusNotFound, "no such endpoint: "+req.URL.Path, "")
	})
	return r
}

// serveHealthz is liveness: it fails when the hub has made no progress for
// LivenessStall (a request or a bug froze it), so the pod is restarted
// instead of holding its subscribers with nothing to give them.
func (s *ServerImpl) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	if stalled := s.hub.stalledFor(time.Now()); stalled > s.opts.LivenessStall {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "stalled", "stalledFor": stalled.Round(time.Millisecond).String()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readinessChecks are the named conditions of readiness, in order.
func (s *ServerImpl) readinessChecks() []struct {
	name string
	ok   bool
} {
	return []struct {
		name string
		ok   bool
	}{
		{"not draining", !s.draining.Load()},
		{"peer set known", s.ready.Load()},
		{"warmed up", s.warm.Load()},
		{"hub live", s.hub.stalledFor(time.Now()) <= s.opts.LivenessStall},
	}
}

func (s *ServerImpl) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	checks := s.readinessChecks()
	failed := []string{}
	for _, c := range checks {
		if !c.ok {
			failed = append(failed, c.name)
		}
	}
	if len(failed) > 0 {
		status := "starting"
		switch {
		case s.draining.Load():
			status = "draining"
		case s.ready.Load() && !s.warm.Load():
			status = "warming up"
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": status, "failed": failed})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "peers": s.Peers(), "peersDown": s.bc.downPeers()})
}

// credential guards endpoints with token, when one is set: 401 without
// credentials, 403 with wrong ones. The older single internal token is
// accepted too while it is set.
func (s *ServerImpl) credential(kind, token string) func(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	var accepted [][]byte
	for _, t := range []string{token, s.opts.InternalToken} {
		if t != "" {
			accepted = append(accepted, []byte(t))
		}
	}
	return func(endpoint string, h http.HandlerFunc) http.HandlerFunc {
		if len(accepted) == 0 {
			return h
		}
		return func(w http.ResponseWriter, r *http.Request) {
			ip := remoteIP(r)
			if ok, wait := s.failures.allowed(ip, time.Now()); !ok {
				s.refuse(w, r, endpoint, "credential_failures", http.StatusTooManyRequests, wait, "too many wrong credentials from this address; retry later")
				return
			}
			header := r.Header.Get("Authorization")
			if header == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sser"`)
				s.writeError(w, r, endpoint, http.StatusUnauthorized, "credentials required: Authorization: Bearer <"+kind+" token>", "")
				return
			}
			scheme, got, _ := strings.Cut(header, " ")
			ok := 0
			if strings.EqualFold(scheme, "Bearer") {
				for _, want := range accepted {
					ok |= subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want)
				}
			}
			if ok != 1 {
				s.m.authFailures.WithLabelValues(endpoint).Inc()
				if n := s.failures.fail(ip, time.Now()); n > 0 {
					s.log.Info("wrong credentials", "endpoint", endpoint, "remote", ip, "failuresSinceLastLog", n)
				}
				s.writeError(w, r, endpoint, http.StatusForbidden, "wrong credentials for the "+kind+" endpoints", "")
				return
			}
			h(w, r)
		}
	}
}

// only answers 405 with Allow for any method but methods.
func (s *ServerImpl) only(endpoint string, h http.HandlerFunc, methods ...string) http.HandlerFunc {
	allow := strings.Join(methods, ", ")
	return func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				h(w, r)
				return
			}
		}
		s.writeError(w, r, endpoint, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed", allow)
	}
}

// readEvents decodes a body of one Event or an array of them, answering
// the error itself; nil when it did.
func (s *ServerImpl) readEvents(w http.ResponseWriter, r *http.Request, name string) []Event {
	// Without application/json a browser could post here with no CORS
	// preflight (a "simple" request): refuse it.
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		s.writeError(w, r, name, http.StatusUnsupportedMediaType, "Content-Type must be application/json, got "+strconv.Quote(ct), "")
		return nil
	}
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	events, err := DecodeEvents(body, s.opts.MaxBatchEvents)
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			s.writeError(w, r, name, http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(s.opts.MaxBodyBytes, 10)+" bytes", "")
		case errors.Is(err, ErrTooManyEvents):
			s.writeError(w, r, name, http.StatusRequestEntityTooLarge, err.Error(), "")
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.writeError(w, r, name, http.StatusRequestTimeout, "body not received within the read timeout", "")
		default:
			s.writeError(w, r, name, http.StatusBadRequest, err.Error(), "")
		}
		return nil
	}
	return events
}

// servePublish publishes like Send: delivered here and to every peer. An
// Idempotency-Key makes a retried publish answer the first publish's
// seqs instead of publishing again.
func (s *ServerImpl) servePublish(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if key != "" && !validIdempotencyKey(key) {
		s.writeError(w, r, "publish", http.StatusBadRequest, "Idempotency-Key must be 1-128 printable ASCII characters", "")
		return
	}
	events := s.readEvents(w, r, "publish")
	if events == nil {
		return
	}
	if s.memory.over.Load() {
		s.refuse(w, r, "publish", "memory", http.StatusServiceUnavailable, time.Second, "this replica is shedding load (memory above its watermark); retry")
		return
	}
	if ok, wait := s.pubRate.take(publisherKey(r), time.Now(), float64(len(events))); !ok {
		s.refuse(w, r, "publish", "publish_rate", http.StatusTooManyRequests, wait, "publish rate over "+strconv.FormatFloat(s.opts.PublishRate, 'f', -1, 64)+" events/s for this publisher; retry later")
		return
	}
	ans, dup, err := s.idem.do(key, func() (Published, error) { return s.publish(r.Context(), events) })
	if err != nil {
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, ErrClosed), errors.Is(err, ErrNotStarted), errors.Is(err, ErrBackPressure):
			status = http.StatusServiceUnavailable
		case r.Context().Err() != nil:
			return // the client is gone: nothing was published
		}
		s.writeError(w, r, "publish", status, err.Error(), "")
		return
	}
	if dup {
		s.m.idempotentHits.Inc()
		writeJSON(w, http.StatusOK, struct {
			Published
			Duplicate bool `json:"duplicate"`
		}{ans, true})
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

// serveSend takes a peer's delivery for this replica's subscribers: one
// batch per request (application/json), or a stream of batches with an
// answer per batch (application/x-ndjson, peerstream.go). Either way every
// batch passes acceptPeerBatch.
func (s *ServerImpl) serveSend(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == streamContentType {
		s.serveSendStream(w, r)
		return
	}
	events := s.readEvents(w, r, "send")
	if events == nil {
		return
	}
	var heldFrom uint64
	if h := r.Header.Get(HeldFromHeader); h != "" && events[0].Origin != "" {
		var err error
		if heldFrom, err = strconv.ParseUint(h, 10, 64); err != nil {
			s.writeError(w, r, "send", http.StatusBadRequest, HeldFromHeader+" must be an integer", "")
			return
		}
	}
	accepted, refused := s.acceptPeerBatch(remoteIP(r), events, heldFrom)
	if refused != nil {
		s.writeError(w, r, "send", refused.status, refused.msg, "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"accepted": accepted})
}

// peerRefusal is why a peer's batch was refused: the status to answer
// and the message; the reason it was counted under is in
// sser_peer_events_refused_total.
type peerRefusal struct {
	status int
	msg    string
}

// acceptPeerBatch checks a batch from the peer at ip and applies it. Events
// of an origin are accepted only from a peer in the set, only from the
// address that announced that origin, one origin per batch, and only within
// MaxSeqGap of what was applied: a forged or broken request cannot replace,
// skip or inflate another replica's events. heldFrom is the lowest seq the
// origin still holds (0: not said). It returns how many events were
// accepted, or why none was.
func (s *ServerImpl) acceptPeerBatch(ip string, events []Event, heldFrom uint64) (int, *peerRefusal) {
	refuse := func(reason string, status int, msg string) (int, *peerRefusal) {
		s.m.peerRefused.WithLabelValues(reason).Inc()
		return 0, &peerRefusal{status: status, msg: msg}
	}
	origin := events[0].Origin
	for i := range events {
		if events[i].Origin != origin {
			return refuse("mixed_origins", http.StatusBadRequest, "all events of one request must have the same origin (a replica sends only its own events)")
		}
	}
	if origin != "" {
		if !s.bc.isPeer(ip) {
			return refuse("not_peer", http.StatusForbidden, "events with an origin are accepted only from peers; "+ip+" is not in the peer set")
		}
		if origin == s.origin {
			// This replica's own events, back from a peer set that names
			// it under another address: applied already, nothing to do.
			return 0, nil
		}
		if err := s.book.bind(origin, ip); err != nil {
			if errors.Is(err, errTooManyOrigins) {
				return refuse("origins_per_peer", http.StatusForbidden, "peer "+ip+" already has "+strconv.Itoa(s.opts.MaxOriginsPerPeer)+" live origins")
			}
			return refuse("origin_owner", http.StatusForbidden, "origin "+origin+" belongs to another peer")
		}
	} else {
		heldFrom = 0
	}
	if err := s.hub.applyFrom(events, "peer", heldFrom); err != nil {
		return refuse("seq_jump", http.StatusBadRequest, err.Error())
	}
	return len(events), nil
}

// publisherKey is who a publish is counted against: its credential when it
// has one (so many apps behind one address are told apart), else its address.
func publisherKey(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		sum := sha256.Sum256([]byte(a))
		return "c:" + string(sum[:16])
	}
	return "ip:" + remoteIP(r)
}

// remoteIP is the address a request came from.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String()
	}
	return host
}

// writeError answers {"error": msg} with status, and Allow for a 405.
func (s *ServerImpl) writeError(w http.ResponseWriter, r *http.Request, endpoint string, status int, msg, allow string) {
	if allow != "" {
		w.Header().Set("Allow", allow)
	}
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	s.noteBadRequest(r, endpoint, status, msg)
	writeJSON(w, status, map[string]string{"error": msg})
}

// noteBadRequest counts and logs an answer with a 4xx status.
func (s *ServerImpl) noteBadRequest(r *http.Request, endpoint string, status int, msg string) {
	if status >= 400 && status < 500 {
		s.m.badRequests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
		s.log.V(1).Info("bad request", "endpoint", endpoint, "method", r.Method, "status", status, "error", msg, "remote", r.RemoteAddr)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
