package sser

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// InternalHandler serves the internal endpoints: peer delivery, publish,
// history, probes and metrics. Start serves it on InternalAddr; mount it
// yourself when InternalAddr is empty.
func (s *ServerImpl) InternalHandler() http.Handler { return s.handler }

// MetricsHandler serves this server's Prometheus metrics.
func (s *ServerImpl) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.m.registry, promhttp.HandlerOpts{})
}

func (s *ServerImpl) internalRouter() http.Handler {
	r := mux.NewRouter()
	r.Handle(PeerEndpointURLPath, s.authorized("send", s.eventsEndpoint("send", false)))
	r.Handle(PublishURLPath, s.authorized("publish", s.eventsEndpoint("publish", true)))
	r.HandleFunc(HistoryURLPath, s.authorized("history", s.only("history", s.serveHistory, http.MethodGet)))
	r.HandleFunc(OriginsURLPath, s.authorized("origins", s.only("origins", s.serveOrigins, http.MethodGet)))
	r.HandleFunc("/healthz", s.only("healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}, http.MethodGet, http.MethodHead))
	r.HandleFunc("/readyz", s.only("readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case s.draining.Load():
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "draining"})
		case !s.ready.Load():
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "starting"})
		case !s.warm.Load():
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "warming up"})
		case !s.Ready():
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "starting"})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "peers": s.Peers()})
		}
	}, http.MethodGet, http.MethodHead))
	r.Handle("/metrics", s.only("metrics", s.MetricsHandler().ServeHTTP, http.MethodGet, http.MethodHead))
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.writeError(w, req, "other", http.StatusNotFound, "no such endpoint: "+req.URL.Path, "")
	})
	return r
}

// authorized requires the internal token, when one is set: 401 without
// credentials, 403 with wrong ones.
func (s *ServerImpl) authorized(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	if s.opts.InternalToken == "" {
		return h
	}
	want := []byte("Bearer " + s.opts.InternalToken)
	return func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		switch {
		case got == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="sser"`)
			s.writeError(w, r, endpoint, http.StatusUnauthorized, "credentials required: Authorization: Bearer <internal token>", "")
		case subtle.ConstantTimeCompare([]byte(got), want) != 1:
			s.writeError(w, r, endpoint, http.StatusForbidden, "wrong credentials", "")
		default:
			h(w, r)
		}
	}
}

// setAuth adds the internal token to a request to a peer.
func (s *ServerImpl) setAuth(req *http.Request) {
	if s.opts.InternalToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.opts.InternalToken)
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

// eventsEndpoint accepts one Event or an array of them. broadcast=false
// delivers to this replica only (peer delivery); true publishes like Send.
// Every event is checked before any is delivered: a bad request changes nothing.
func (s *ServerImpl) eventsEndpoint(name string, broadcast bool) http.HandlerFunc {
	return s.only(name, func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			mt, _, err := mime.ParseMediaType(ct)
			if err != nil || mt != "application/json" {
				s.writeError(w, r, name, http.StatusUnsupportedMediaType, "Content-Type must be application/json, got "+strconv.Quote(ct), "")
				return
			}
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
			default:
				s.writeError(w, r, name, http.StatusBadRequest, err.Error(), "")
			}
			return
		}
		if broadcast {
			if err := s.Publish(r.Context(), events...); err != nil {
				status := http.StatusServiceUnavailable
				if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNotStarted) {
					status = http.StatusBadRequest
				}
				s.writeError(w, r, name, status, err.Error(), "")
				return
			}
		} else {
			s.noteOrigins(r.Header.Get(PeerHeader), events)
			s.hub.apply(events, "peer")
		}
		writeJSON(w, http.StatusOK, map[string]int{"accepted": len(events)})
	}, http.MethodPost)
}

// writeError answers {"error": msg} with status, and Allow for a 405.
func (s *ServerImpl) writeError(w http.ResponseWriter, r *http.Request, endpoint string, status int, msg, allow string) {
	if allow != "" {
		w.Header().Set("Allow", allow)
	}
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	if status >= 400 && status < 500 {
		s.m.badRequests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
		s.log.V(1).Info("bad request", "endpoint", endpoint, "method", r.Method, "status", status, "error", msg, "remote", r.RemoteAddr)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
