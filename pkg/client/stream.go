package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stream is one SSE subscription kept alive across disconnections. Create
// it with NewStream; it connects at once and reconnects on its own until
// Close, the end of its context, a 204 answer, a handler error, or the error
// handler says stop. All methods are safe for concurrent use.
type Stream struct {
	url    string
	o      options
	events chan Event
	done   chan struct{}
	wake   chan struct{} // Restart wakes a backoff wait

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu         sync.Mutex
	lastID     string
	restart    bool
	connCancel context.CancelCauseFunc
	err        error

	serverRetry    time.Duration // run goroutine only
	serverRetrySet bool
}

// NewStream starts a Stream that reads rawURL. It returns an error only for
// an invalid URL or option; connection problems go to the error handler.
// The Stream stops when ctx ends.
func NewStream(ctx context.Context, rawURL string, opts ...Option) (*Stream, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: url: %w", ErrInvalidOption, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: url %q: scheme must be http or https", ErrInvalidOption, rawURL)
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.errorHandler == nil {
		o.errorHandler = func(_ context.Context, err error) bool { return Retryable(err) }
	}
	if o.rnd == nil {
		o.rnd = rand.Float64
	}
	s := &Stream{
		url:    rawURL,
		o:      o,
		events: make(chan Event, o.bufferSize),
		done:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
		lastID: o.lastEventID,
	}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	go s.run()
	return s, nil
}

// Events is the channel events arrive on, in order, unless a handler was
// set with WithHandler. It is closed when the Stream stops. A consumer that
// falls behind holds the connection back (TCP flow control); nothing is
// dropped.
func (s *Stream) Events() <-chan Event { return s.events }

// Done is closed when the Stream has stopped and its goroutine has exited.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err is why the Stream stopped: ErrClosed after Close, the context's
// cause when its context ended, ErrNoContent, a handler's error, or the
// error the error handler declined to retry. It is nil while running.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// LastEventID is the id the Stream sends as Last-Event-ID when it
// reconnects: the id of the last event delivered, or of a later id-only
// frame. It moves just after an event is taken from Events (at once with a
// handler), so to record a resume point next to your own processing, store
// the Event.ID of the event you processed; after Close it is final. Pass it
// to WithLastEventID to resume in another process.
func (s *Stream) LastEventID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

// Restart drops the current connection (or cuts a backoff wait short) and
// reconnects at once, resuming from LastEventID. An event being delivered is
// delivered first.
func (s *Stream) Restart() {
	s.mu.Lock()
	s.restart = true
	if s.connCancel != nil {
		s.connCancel(errRestart)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close stops the Stream and waits for its goroutine to exit. Calling it
// again, or concurrently, is safe and waits the same way. It returns nil.
func (s *Stream) Close() error {
	s.cancel(ErrClosed)
	<-s.done
	return nil
}

func (s *Stream) setLastID(id string) {
	s.mu.Lock()
	s.lastID = id
	s.mu.Unlock()
}

func (s *Stream) stop(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// run is the Stream's one goroutine: connect, read, and wait out the
// backoff, until something says stop.
func (s *Stream) run() {
	defer close(s.done)
	defer close(s.events)
	defer s.cancel(nil)
	log := s.o.log.WithValues("url", s.url)
	attempt := 0
	for {
		connectedAt, err := s.connect()
		if s.ctx.Err() != nil {
			s.stop(context.Cause(s.ctx))
			return
		}
		if s.takeRestart() || errors.Is(err, errRestart) {
			log.V(1).Info("restarting connection")
			attempt = 0
			continue
		}
		var herr *handlerError
		if errors.As(err, &herr) {
			s.stop(herr.err)
			return
		}
		if !connectedAt.IsZero() && time.Since(connectedAt) >= s.o.resetInterval {
			attempt = 0
		}
		goOn := s.o.errorHandler(s.ctx, err)
		if errors.Is(err, ErrNoContent) || !goOn {
			log.V(1).Info("stream stopped", "reason", err.Error())
			s.stop(err)
			return
		}
		var retryAfter time.Duration
		var se *StatusError
		if errors.As(err, &se) {
			retryAfter = se.RetryAfter
		}
		base := s.o.initialDelay
		if s.serverRetrySet {
			base = s.serverRetry
		}
		d := backoffDelay(base, s.o.maxDelay, s.o.jitter, attempt, retryAfter, s.o.rnd())
		if s.o.onDelay != nil {
			s.o.onDelay(attempt, d)
		}
		attempt++
		log.V(1).Info("reconnecting", "delay", d, "attempt", attempt, "reason", err.Error())
		if !s.sleep(d) {
			s.stop(context.Cause(s.ctx))
			return
		}
	}
}

// sleep waits d, returning early on Restart; false when the Stream stops.
func (s *Stream) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.wake:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *Stream) takeRestart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.restart
	s.restart = false
	return r
}

// handlerError marks an error returned by the event handler: it stops the
// Stream and is never retried.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// connect makes one connection and reads it until it ends. connectedAt is
// zero when no 200 answer arrived. The error is never nil.
func (s *Stream) connect() (connectedAt time.Time, err error) {
	connCtx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	s.mu.Lock()
	if s.restart {
		// Restart before this attempt began: this attempt is the restart.
		s.restart = false
	}
	select {
	case <-s.wake: // a Restart this attempt already answers
	default:
	}
	s.connCancel = cancel
	lastID := s.lastID
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.connCancel = nil
		s.mu.Unlock()
		if connCtx.Err() != nil {
			// Cut by Restart, the read timeout or Close: say which.
			err = context.Cause(connCtx)
		}
	}()

	var timer *time.Timer
	if s.o.readTimeout > 0 {
		timer = time.AfterFunc(s.o.readTimeout, func() { cancel(ErrReadTimeout) })
		defer timer.Stop()
	}

	req, err := s.newRequest(connCtx, lastID)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := s.o.httpClient.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	if err := checkResponse(resp); err != nil {
		return time.Time{}, err
	}
	if s.o.onConnect != nil {
		s.o.onConnect(resp)
	}
	connectedAt = time.Now()
	s.o.log.V(1).Info("connected", "url", s.url, "lastEventID", lastID)

	body := io.Reader(resp.Body)
	if timer != nil {
		body = &timeoutReader{r: resp.Body, t: timer, d: s.o.readTimeout}
	}
	p := NewParser(body, ParserConfig{
		LastEventID:   lastID,
		MaxEventSize:  s.o.maxEventSize,
		OnComment:     s.o.onComment,
		OnLastEventID: s.setLastID,
		OnRetry: func(d time.Duration) {
			s.serverRetry, s.serverRetrySet = d, true
		},
	})
	for {
		ev, err := p.Next()
		if timer != nil {
			timer.Stop() // time spent delivering is not a read timeout
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrStreamEnded
			}
			return connectedAt, err
		}
		if err := s.deliver(ev); err != nil {
			return connectedAt, err
		}
	}
}

// deliver hands ev to the handler or the channel. The last event ID moves
// only once the event is delivered, so a Restart or a crash in between
// resumes with the event sent again rather than lost.
func (s *Stream) deliver(ev Event) error {
	if s.ctx.Err() != nil {
		return context.Cause(s.ctx) // stopped: no more events
	}
	if s.o.handler != nil {
		if err := s.o.handler(s.ctx, ev); err != nil {
			return &handlerError{err: err}
		}
	} else {
		select {
		case s.events <- ev:
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		}
	}
	s.setLastID(ev.ID)
	return nil
}

func (s *Stream) newRequest(ctx context.Context, lastID string) (*http.Request, error) {
	var body io.Reader
	if s.o.hasBody {
		body = bytes.NewReader(s.o.body) // sets GetBody, so 307/308 redirects re-send it
	}
	req, err := http.NewRequestWithContext(ctx, s.o.method, s.url, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	req.Header = s.o.header.Clone()
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if s.o.requestEditor != nil {
		if err := s.o.requestEditor(req); err != nil {
			return nil, fmt.Errorf("sser/client: request editor: %w", err)
		}
	}
	return req, nil
}

// checkResponse accepts a 200 text/event-stream answer only.
func checkResponse(resp *http.Response) error {
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return ErrNoContent
	case resp.StatusCode != http.StatusOK:
		return newStatusError(resp)
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "text/event-stream" {
		return fmt.Errorf("%w: got %q", ErrContentType, resp.Header.Get("Content-Type"))
	}
	return nil
}

func newStatusError(resp *http.Response) *StatusError {
	e := &StatusError{Code: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var j struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &j) == nil && j.Error != "" {
		e.Message = j.Error
	} else {
		e.Message = strings.TrimSpace(string(b))
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(ra); err == nil && secs > 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			e.RetryAfter = max(time.Until(t), 0)
		}
	}
	return e
}

// timeoutReader arms the read timeout for each Read.
type timeoutReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (r *timeoutReader) Read(p []byte) (int, error) {
	r.t.Reset(r.d)
	return r.r.Read(p)
}
