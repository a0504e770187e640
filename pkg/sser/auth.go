package sser

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sser-dev/sser/pkg/auth"
)

// TicketsURLPath is where a publisher (an application's backend) asks for a
// ticket: POST {"subject","streams":[...],"ttl":"60s"}, answered
// {"ticket","expires"}. It is guarded like publish.
const TicketsURLPath = "/api/json/v1/tickets"

// ExpiredEventType is the event a subscriber gets when its credential
// expires, just before the connection is closed. EventSource then
// reconnects with the same URL and, its credential being expired, gets 401;
// a page should listen for it (es.addEventListener("sser-expired", ...)),
// get a fresh ticket or token and open a new EventSource with lastEventID.
const ExpiredEventType = "sser-expired"

var expiredFrame = []byte("event: " + ExpiredEventType + "\ndata: {\"reason\":\"credential expired\"}\n\n")

// AuthOptions authenticate subscribers and publishers. The zero value
// authenticates no one: every subscriber is served (AllowStream still applies).
type AuthOptions struct {
	// Authenticate, when set, is asked for every subscription, before
	// AllowStream: an error is answered 401 (with WWW-Authenticate), a
	// requested stream the principal does not Allow is answered 403, and a
	// connection is closed (after an ExpiredEventType event) when the
	// principal's Expires passes. It also lets a bearer JWT publish to the
	// streams its Principal.Publish grants. (*auth.Authenticator).Authenticate
	// fits; an embedding application may supply its own session check.
	Authenticate func(r *http.Request) (*auth.Principal, error)
	// Tickets, when set, mints tickets at TicketsURLPath.
	Tickets *auth.Ticketer
}

// authorizeSubscribe authenticates a subscription to streams, answering the
// request itself when it is refused. It returns when the credential
// expires (zero: never) and the principal, whose grants also filter the
// streams a pattern subscription matches. Neither the answer nor the log holds the
// credential.
func (s *ServerImpl) authorizeSubscribe(w http.ResponseWriter, r *http.Request, streams []string) (time.Time, *auth.Principal, bool) {
	if s.opts.Authenticate == nil {
		return time.Time{}, nil, true
	}
	p, err := s.subscriberPrincipal(r)
	if err != nil {
		msg := s.credentialProblem("events", err)
		s.log.V(1).Info("subscriber not authenticated", "reason", err.Error(), "url", auth.RedactURL(r.URL), "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="sser"`)
		s.writeError(w, r, "events", http.StatusUnauthorized, msg, "")
		return time.Time{}, nil, false
	}
	for _, name := range streams {
		if !p.Allows(name) {
			s.m.authFailures.WithLabelValues("events").Inc()
			s.log.V(1).Info("subscription not granted", "stream", name, "subject", p.Subject, "url", auth.RedactURL(r.URL), "remote", r.RemoteAddr)
			s.writeError(w, r, "events", http.StatusForbidden, "the credential does not grant stream "+strconv.Quote(name), "")
			return time.Time{}, nil, false
		}
	}
	return p.Expires, p, true
}

// subscriberPrincipal authenticates a subscription's request (Authenticate
// is set): its principal, or why there is none (auth.ErrNoCredential when
// it brought no credential, auth.ErrExpired when it is past its expiry).
func (s *ServerImpl) subscriberPrincipal(r *http.Request) (*auth.Principal, error) {
	p, err := s.opts.Authenticate(r)
	if err == nil && p == nil {
		err = auth.ErrNoCredential
	}
	if err == nil && !p.Expires.IsZero() && !time.Now().Before(p.Expires) {
		err = auth.ErrExpired
	}
	return p, err
}

// credentialProblem is what a subscriber refused for err is told; a wrong
// credential (not a missing one) is counted on endpoint.
func (s *ServerImpl) credentialProblem(endpoint string, err error) string {
	if errors.Is(err, auth.ErrNoCredential) {
		return "credentials required: a ticket or token as Authorization: Bearer, ?ticket=, ?access_token= or cookie"
	}
	s.m.authFailures.WithLabelValues(endpoint).Inc()
	return "credentials not accepted: " + strings.TrimPrefix(err.Error(), "auth: ")
}

// expiryTimer fires a little after expires: up to a tenth of the time
// left at connect, at most 5s, at random, so that many credentials minted
// together do not all reconnect in the same second. After, not before: a
// reconnect with the same credential must find it expired. Never when
// expires is zero.
func expiryTimer(expires time.Time) (<-chan time.Time, func() bool) {
	if expires.IsZero() {
		return nil, func() bool { return false }
	}
	t := time.NewTimer(expiryDelay(expires))
	return t.C, t.Stop
}

// expiryDelay is how long from now a connection whose credential expires
// at expires is closed (see expiryTimer).
func expiryDelay(expires time.Time) time.Duration {
	left := max(time.Until(expires), 0)
	return left + rand.N(min(left/10, 5*time.Second)+1)
}

// publisherAuth guards publish with the publish token (guard, as before)
// or, when Authenticate is set, with a bearer JWT whose publish claim grants
// every stream of the body: one application can be limited to its own
// streams. A bearer that is not JWT-shaped goes to guard unchanged.
func (s *ServerImpl) publisherAuth(guard func(string, http.HandlerFunc) http.HandlerFunc) func(string, http.HandlerFunc) http.HandlerFunc {
	var tokens [][]byte
	for _, t := range []string{s.opts.PublishToken, s.opts.InternalToken} {
		if t != "" {
			tokens = append(tokens, []byte(t))
		}
	}
	return func(endpoint string, h http.HandlerFunc) http.HandlerFunc {
		guarded := guard(endpoint, h)
		authenticate := s.opts.Authenticate
		if authenticate == nil {
			return guarded
		}
		return func(w http.ResponseWriter, r *http.Request) {
			scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			if !strings.EqualFold(scheme, "Bearer") || !auth.LooksLikeJWT(cred) || isOneOf(cred, tokens) {
				guarded(w, r)
				return
			}
			p, err := authenticate(r)
			if err != nil || p == nil || len(p.Publish) == 0 {
				s.m.authFailures.WithLabelValues(endpoint).Inc()
				msg := "the token grants no publishing (no publish claim)"
				if err != nil {
					msg = "credentials not accepted: " + strings.TrimPrefix(err.Error(), "auth: ")
				}
				s.log.Info("wrong credentials", "endpoint", endpoint, "remote", r.RemoteAddr)
				s.writeError(w, r, endpoint, http.StatusForbidden, msg, "")
				return
			}
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
			if err == nil {
				// The streams are checked here; everything else about the
				// body is servePublish's, reading the same bytes again.
				if events, derr := DecodeEvents(bytes.NewReader(body), s.opts.MaxBatchEvents); derr == nil {
					for _, e := range events {
						if !p.AllowsPublish(e.Stream) {
							s.m.authFailures.WithLabelValues(endpoint).Inc()
							s.writeError(w, r, endpoint, http.StatusForbidden, "the token does not grant publishing to stream "+strconv.Quote(e.Stream), "")
							return
						}
					}
				}
			}
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
			h(w, r)
		}
	}
}

// errReader ends a re-read body with the first read's error (a body over
// the limit stays over the limit).
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}

func isOneOf(s string, tokens [][]byte) bool {
	ok := 0
	for _, t := range tokens {
		ok |= subtle.ConstantTimeCompare([]byte(s), t)
	}
	return ok == 1
}

// ticketRequest is the body of a ticket request.
type ticketRequest struct {
	Subject string   `json:"subject"`
	Streams []string `json:"streams"`
	TTL     string   `json:"ttl"`
}

// serveTickets mints a ticket for the subject and streams asked for.
func (s *ServerImpl) serveTickets(w http.ResponseWriter, r *http.Request) {
	tk := s.opts.Tickets
	if tk == nil {
		s.writeError(w, r, "tickets", http.StatusNotFound, "tickets are not configured on this replica (no ticket key)", "")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			s.writeError(w, r, "tickets", http.StatusUnsupportedMediaType, "Content-Type must be application/json", "")
			return
		}
	}
	var req ticketRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, "tickets", http.StatusBadRequest, "body must be {\"subject\",\"streams\":[...],\"ttl\":\"60s\"}: "+err.Error(), "")
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			s.writeError(w, r, "tickets", http.StatusBadRequest, "ttl must be a positive duration such as \"60s\"", "")
			return
		}
		ttl = d
	}
	ticket, expires, err := tk.Mint(req.Subject, req.Streams, ttl)
	if err != nil {
		s.writeError(w, r, "tickets", http.StatusBadRequest, strings.TrimPrefix(err.Error(), "auth: "), "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"ticket": ticket, "expires": expires.UTC().Format(time.RFC3339)})
}
