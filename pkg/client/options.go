package client

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
)

// Defaults of a Stream's reconnection policy.
const (
	// DefaultInitialDelay is the reconnection delay until the server sends a
	// retry field. The spec leaves it to the client; browsers use a few
	// seconds, sser sends 3 s.
	DefaultInitialDelay = time.Second
	// DefaultMaxDelay caps the exponential backoff.
	DefaultMaxDelay = 30 * time.Second
	// DefaultJitter is the fraction of each delay that is randomised: a
	// delay d becomes a value in (d*(1-jitter), d].
	DefaultJitter = 0.5
	// DefaultResetInterval is how long a connection must stay up for the
	// backoff to start again from the initial delay.
	DefaultResetInterval = time.Minute
	// DefaultBufferSize is the capacity of the Events channel.
	DefaultBufferSize = 16
)

// Option configures a Stream (and, through NewMux, every Stream of a Mux).
type Option func(*options)

type options struct {
	method        string
	header        http.Header
	body          []byte
	hasBody       bool
	httpClient    *http.Client
	requestEditor func(*http.Request) error
	lastEventID   string
	readTimeout   time.Duration
	initialDelay  time.Duration
	maxDelay      time.Duration
	jitter        float64
	resetInterval time.Duration
	bufferSize    int
	maxEventSize  int
	handler       func(ctx context.Context, ev Event) error
	errorHandler  func(ctx context.Context, err error) bool
	onComment     func(text string)
	onConnect     func(resp *http.Response)
	log           logr.Logger
	rnd           func() float64                     // jitter source, replaced in tests
	onDelay       func(attempt int, d time.Duration) // observes backoff delays in tests
}

func defaultOptions() options {
	return options{
		method:        http.MethodGet,
		header:        http.Header{},
		httpClient:    http.DefaultClient,
		initialDelay:  DefaultInitialDelay,
		maxDelay:      DefaultMaxDelay,
		jitter:        DefaultJitter,
		resetInterval: DefaultResetInterval,
		bufferSize:    DefaultBufferSize,
		log:           logr.Discard(),
	}
}

func (o *options) validate() error {
	switch {
	case o.initialDelay < 0:
		return fmt.Errorf("%w: initial delay %v is negative", ErrInvalidOption, o.initialDelay)
	case o.maxDelay <= 0:
		return fmt.Errorf("%w: max delay %v must be positive", ErrInvalidOption, o.maxDelay)
	case o.jitter < 0 || o.jitter > 1:
		return fmt.Errorf("%w: jitter %v is outside [0,1]", ErrInvalidOption, o.jitter)
	case o.readTimeout < 0:
		return fmt.Errorf("%w: read timeout %v is negative", ErrInvalidOption, o.readTimeout)
	case o.bufferSize < 0:
		return fmt.Errorf("%w: buffer size %d is negative", ErrInvalidOption, o.bufferSize)
	case o.httpClient == nil:
		return fmt.Errorf("%w: nil HTTP client", ErrInvalidOption)
	case o.method == "":
		return fmt.Errorf("%w: empty method", ErrInvalidOption)
	}
	return nil
}

// WithMethod sets the request method (default GET).
func WithMethod(method string) Option { return func(o *options) { o.method = method } }

// WithHeader adds a request header sent on every connection.
func WithHeader(key, value string) Option {
	return func(o *options) { o.header.Add(key, value) }
}

// WithBody sets a request body, sent again on every reconnect.
func WithBody(body []byte) Option {
	return func(o *options) { o.body, o.hasBody = body, true }
}

// WithHTTPClient sets the HTTP client (default http.DefaultClient). Its
// Timeout must be 0: it would cut every stream; use WithReadTimeout instead.
// The client's redirect policy applies; Go's default follows up to 10.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// WithRequestEditor sets a function that may change each request just
// before it is sent, for example to add a fresh bearer token.
func WithRequestEditor(f func(*http.Request) error) Option {
	return func(o *options) { o.requestEditor = f }
}

// WithLastEventID sets the Last-Event-ID sent on the first connection, to
// resume where an earlier process stopped.
func WithLastEventID(id string) Option { return func(o *options) { o.lastEventID = id } }

// WithReadTimeout restarts the connection when no byte arrives for d (0, the
// default, disables it). sser sends a heartbeat comment every 15 s, so a
// value of two or three heartbeats finds a dead connection that TCP has not
// noticed. The time the caller spends handling an event does not count.
func WithReadTimeout(d time.Duration) Option { return func(o *options) { o.readTimeout = d } }

// WithBackoff sets the reconnection policy: the delay before the server
// sends retry, the cap of the exponential growth, and the jitter fraction
// in [0,1].
func WithBackoff(initial, maxDelay time.Duration, jitter float64) Option {
	return func(o *options) { o.initialDelay, o.maxDelay, o.jitter = initial, maxDelay, jitter }
}

// WithResetInterval sets how long a connection must stay up for the backoff
// to reset to its initial delay (default one minute).
func WithResetInterval(d time.Duration) Option { return func(o *options) { o.resetInterval = d } }

// WithBufferSize sets the capacity of the Events channel.
func WithBufferSize(n int) Option { return func(o *options) { o.bufferSize = n } }

// WithMaxEventSize bounds one event (default DefaultMaxEventSize).
func WithMaxEventSize(n int) Option { return func(o *options) { o.maxEventSize = n } }

// WithHandler delivers events to h, called on the Stream's goroutine in
// order, instead of on the Events channel. ctx ends when the Stream stops.
// A non-nil error stops the Stream, which then reports it from Err; that
// event does not advance LastEventID, so resuming from it delivers the
// event again. No event is handed over after the Stream stops. Do not
// call Close from h (it waits for h to return); return an error instead.
func WithHandler(h func(ctx context.Context, ev Event) error) Option {
	return func(o *options) { o.handler = h }
}

// WithErrorHandler is called with every error that ends a connection or a
// connection attempt; it returns true to reconnect (after the backoff
// delay) and false to stop the Stream with that error. The default is
// Retryable. A 204 No Content always stops the Stream, as the spec requires;
// the handler is still told.
func WithErrorHandler(h func(ctx context.Context, err error) bool) Option {
	return func(o *options) { o.errorHandler = h }
}

// WithCommentHandler is called with the text of each comment line (sser's
// heartbeats). It runs on the reading goroutine and must be quick.
func WithCommentHandler(h func(text string)) Option { return func(o *options) { o.onComment = h } }

// WithConnectHandler is called with every 200 response before its events
// are read, for example to look at headers. It must not read or close the
// body.
func WithConnectHandler(h func(resp *http.Response)) Option {
	return func(o *options) { o.onConnect = h }
}

// WithLogger logs connections and reconnections (V(1)) to log.
func WithLogger(log logr.Logger) Option { return func(o *options) { o.log = log } }
