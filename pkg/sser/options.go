package sser

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sser-dev/sser/pkg/peerfinder"
)

// PeerFinder reports the set of replicas; see package peerfinder.
type PeerFinder = peerfinder.PeerFinder

// Options configure a Server. The zero value of every field means its default.
type Options struct {
	// InternalAddr is where Start listens for peers, publishers, probes and
	// metrics, e.g. ":7000". Empty means do not listen: mount InternalHandler yourself.
	InternalAddr string
	// PeerPort is the port peers listen on; default the port of InternalAddr.
	PeerPort int
	// PeerFinder reports the replicas. Required.
	PeerFinder PeerFinder
	// PodIP is this replica's own IP in the peer set: it is delivered to in
	// process, never over HTTP.
	PodIP string
	// PodName is this replica's pod name, shown on the status page.
	PodName string
	// Logger receives the server's logs; default discards them.
	Logger logr.Logger

	// Heartbeat is the interval of SSE comment lines on idle connections (default 15s).
	Heartbeat time.Duration
	// Retry is the reconnection delay sent to clients in the retry field (default 3s).
	Retry time.Duration
	// MaxConnectionTime ends a connection after about this long (jittered
	// between 80% and 100%), so long-lived clients rebalance. 0 means never.
	MaxConnectionTime time.Duration
	// WriteTimeout bounds one write to a subscriber (default 10s).
	WriteTimeout time.Duration
	// SubscriberQueue is how many frames may wait for one subscriber before it
	// is disconnected (default 1024).
	SubscriberQueue int
	// NoPreamble leaves out the two frames without data sent on connect:
	// the retry field and the id-only frame. The spec says a frame
	// without data dispatches nothing, and browsers and sser's client
	// follow it; the id-only frame gives a client a resume point before
	// its first event. Some clients dispatch each such frame as an empty
	// event (LaunchDarkly's Go eventsource, r3labs/sse and go-sse's
	// client; see the README). Without the preamble they keep their own
	// reconnection delay and have no id until the first event. A
	// subscriber may also choose with ?preamble=0 or 1.
	NoPreamble bool
	// DisableHijack serves every subscriber from its handler's goroutine
	// through net/http's ResponseWriter, as HTTP/2 and writers that cannot
	// be hijacked are. By default an HTTP/1.1 subscription's connection is
	// hijacked once its answer is known, and the handler returns: an idle
	// connection then costs no goroutine (see hijack.go). Set it when a
	// middleware must see the response (its status, bytes written) or the
	// handler's return.
	DisableHijack bool
	// Compression is CompressionGzip to compress SSE responses for clients
	// that send Accept-Encoding: gzip, or CompressionOff (the default, also
	// ""). Each event is deflated once and shared by every connection that
	// can use it (compression.go), so a compressed connection costs about
	// 100 bytes more than a plain one and no compressor of its own.
	Compression string
	// CORSOrigins lists the origins allowed to subscribe from a browser on
	// another origin; "*" allows any. Empty sends no CORS headers. A
	// WebSocket from a browser on another origin is refused (403) unless
	// listed here; with "*" it is allowed, but its cookies are ignored.
	CORSOrigins []string
	// DisableWebSocket refuses WebSocket subscriptions (400). By default a
	// GET with Upgrade: websocket on the SSE handler is one: the same
	// checks, limits and ids, with JSON messages (see README).
	DisableWebSocket bool

	// AllowStream, when set, decides whether a request may subscribe to a
	// stream. A refused subscription is answered 204 No Content, which tells
	// EventSource and other SSE clients to stop reconnecting. For a
	// WebSocket r is the upgrade request, kept with the connection for the
	// streams it subscribes later; a refusal is a 403 before the upgrade,
	// a 4403 close after it.
	AllowStream func(r *http.Request, stream string) bool
	// AuthOptions authenticate subscribers and publishers (auth.go).
	AuthOptions

	// PeerToken, when set, is the credential of replicas: required as
	// "Authorization: Bearer <token>" on peer delivery, history and origins,
	// and sent by this replica to its peers. Every replica must share it.
	PeerToken string
	// PublishToken, when set, is required on the publish endpoint. It grants
	// publishing only: a publisher cannot pose as a peer.
	PublishToken string
	// InternalToken is the older single credential: when set, it is the
	// PeerToken and the PublishToken wherever those are empty.
	InternalToken string

	// OutboxSize is how many of its own events a replica holds for peers
	// that have not acknowledged them yet and for repairs (default 65536).
	// When a peer lags by the whole outbox, publishers get back-pressure
	// (ErrBackPressure, 503 with Retry-After) for up to PeerCutoff; then that
	// peer is cut off: it skips what the outbox no longer holds and its
	// subscribers are told of the loss.
	OutboxSize int
	// OutboxBytes bounds the outbox's message bytes (default 64 MiB).
	OutboxBytes int64
	// PeerCutoff is how long one lagging peer may hold publishers back
	// before it is cut off (default 10s).
	PeerCutoff time.Duration
	// PeerQueue is the older name of OutboxSize, used when OutboxSize is 0.
	PeerQueue int
	// PeerBatch is the most events sent in one batch to a peer (default
	// 500); a sender has at most two batches in flight. A peer that times
	// out gets smaller batches until it answers in time again.
	PeerBatch int
	// PeerTimeout bounds how long a peer may take to answer for a batch
	// once asked, and to open a delivery stream or answer a one-shot POST
	// (default 10s). A peer that times out gets up to four times as long
	// on the next attempts.
	PeerTimeout time.Duration
	// PeerBackoffMin and PeerBackoffMax bound the retry backoff (default 100ms and 5s).
	PeerBackoffMin, PeerBackoffMax time.Duration

	// InternalReadTimeout bounds reading one request on the internal
	// listener, header and body (default 15s), so a client that trickles a
	// body cannot hold a connection. On a peer's delivery stream it bounds
	// each line instead (a silent stream is closed after 3/4 to all of
	// it), and senders write a keepalive line every third of it.
	InternalReadTimeout time.Duration

	// MaxBodyBytes limits a request body on the internal endpoints, and a
	// line of a peer's delivery stream (default 1 MiB).
	MaxBodyBytes int64
	// MaxBatchEvents limits the events in one request or stream line
	// (default 10000).
	MaxBatchEvents int

	// MaxSeqGap is the largest jump ahead in an origin's seq accepted from
	// a peer (default 1<<20): a jump further than any outbox can cover is
	// refused and counted, not waited for.
	MaxSeqGap uint64
	// MaxOriginsPerPeer bounds the origins one peer address may announce
	// (default 16): each restart of a pod brings a new origin.
	MaxOriginsPerPeer int
	// IdempotencyWindow is how long a publish's Idempotency-Key is
	// remembered, so a retried publish is applied once (default 5m;
	// negative disables).
	IdempotencyWindow time.Duration
	// LivenessStall is how long the hub may make no progress before
	// /healthz fails, so a frozen replica is restarted (default 10s).
	LivenessStall time.Duration

	// MaxReplayEvents and MaxReplayBytes bound what one resume replays
	// (default 10000 events, 8 MiB). A client that missed more gets the
	// oldest part and resumes again from there for the rest.
	MaxReplayEvents int
	MaxReplayBytes  int
	// MaxConnections caps the subscriptions of this replica (default from
	// the file limit, less 512 descriptors kept for the internal port,
	// peers and probes; negative: no cap); MaxConnectionsPerIP caps one
	// client address's (default 0: no cap; set TrustedProxies behind a
	// proxy, or every client shares its address); ConnectionRate caps new
	// subscriptions per second (default 0: no cap). Over a cap: 503, or 429
	// per IP, with a jittered Retry-After.
	MaxConnections      int
	MaxConnectionsPerIP int
	ConnectionRate      float64
	// TrustedProxies are addresses or CIDRs whose X-Forwarded-For names the
	// client address.
	TrustedProxies []string
	// PublishRate caps the events per second one publisher (its
	// credential, else its address) may publish (default 0: no cap); over
	// it: 429 with Retry-After.
	PublishRate float64
	// MemoryWatermark sheds load: while the live heap is above it, new
	// subscriptions and publishes are refused with 503 (default 80% of the
	// container's memory limit when there is one; negative: never).
	MemoryWatermark int64

	// MaxStreamsPerConnection bounds the streams one subscription names
	// (default 64); more are refused with 400.
	MaxStreamsPerConnection int
	// MaxHistoryStreams bounds the streams holding history (default 100000)
	// and MaxHistoryBytes the bytes held across them (default 256 MiB);
	// MaxStreamHistoryBytes bounds one stream's (default 4 MiB). The
	// oldest events go first, counted in sser_history_evicted_total.
	MaxHistoryStreams     int
	MaxHistoryBytes       int64
	MaxStreamHistoryBytes int64

	// HistorySize is how many recent events each stream keeps for resuming
	// clients (default 1000; negative disables history).
	HistorySize int
	// HistoryAge is how long events are kept for resuming clients (default 5m).
	HistoryAge time.Duration

	// WarmUpTimeout bounds how long a new replica tries to copy history from
	// a peer before it reports ready (default 15s; negative skips warm-up).
	WarmUpTimeout time.Duration

	// AntiEntropyInterval is how often the replica compares notes with a
	// random peer to fetch events of quiet origins it lacks (default 2s;
	// negative disables).
	AntiEntropyInterval time.Duration

	// Registry receives the metrics; default a new registry with the Go and
	// process collectors, served on /metrics.
	Registry *prometheus.Registry
}

// Option defaults.
const (
	DefaultHeartbeat       = 15 * time.Second
	DefaultRetry           = 3 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultSubscriberQueue = 4096
	DefaultOutboxSize      = 65536
	DefaultOutboxBytes     = 64 << 20
	DefaultPeerCutoff      = 10 * time.Second
	DefaultMaxSeqGap       = 1 << 20
	DefaultMaxOriginsPer   = 16
	DefaultIdempotencyTTL  = 5 * time.Minute
	DefaultLivenessStall   = 10 * time.Second
	// DefaultInternalReadTimeout bounds reading one internal request.
	DefaultInternalReadTimeout   = 15 * time.Second
	DefaultMaxReplayEvents       = 10000
	DefaultMaxReplayBytes        = 8 << 20
	DefaultMaxStreamsPerConn     = 64
	DefaultMaxHistoryStreams     = 100000
	DefaultMaxHistoryBytes       = 256 << 20
	DefaultMaxStreamHistoryBytes = 4 << 20
	// DefaultPeerQueue is the older name of DefaultOutboxSize.
	DefaultPeerQueue      = DefaultOutboxSize
	DefaultPeerBatch      = 500
	DefaultPeerTimeout    = 10 * time.Second
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxBatchEvents = 10000
	DefaultHistorySize    = 1000
	DefaultHistoryAge     = 5 * time.Minute
)

// DefaultOptions returns the options with every default filled in, for a
// caller that wants to start from them (the binary's flags do). Zero in a
// field given to NewWithOptions means the same default.
func DefaultOptions() Options {
	var o Options
	o.setDefaults()
	return o
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	def(&o.Heartbeat, DefaultHeartbeat)
	def(&o.Retry, DefaultRetry)
	def(&o.WriteTimeout, DefaultWriteTimeout)
	def(&o.PeerTimeout, DefaultPeerTimeout)
	def(&o.PeerBackoffMin, 100*time.Millisecond)
	def(&o.PeerBackoffMax, 5*time.Second)
	def(&o.PeerCutoff, DefaultPeerCutoff)
	def(&o.HistoryAge, DefaultHistoryAge)
	def(&o.WarmUpTimeout, 15*time.Second)
	def(&o.AntiEntropyInterval, 2*time.Second)
	def(&o.IdempotencyWindow, DefaultIdempotencyTTL)
	def(&o.LivenessStall, DefaultLivenessStall)
	def(&o.InternalReadTimeout, DefaultInternalReadTimeout)
	if o.OutboxSize == 0 {
		o.OutboxSize = o.PeerQueue
	}
	defInt(&o.OutboxSize, DefaultOutboxSize)
	o.PeerQueue = o.OutboxSize
	defInt(&o.SubscriberQueue, DefaultSubscriberQueue)
	defInt(&o.PeerBatch, DefaultPeerBatch)
	defInt(&o.MaxBatchEvents, DefaultMaxBatchEvents)
	defInt(&o.HistorySize, DefaultHistorySize)
	defInt(&o.MaxOriginsPerPeer, DefaultMaxOriginsPer)
	defInt(&o.MaxReplayEvents, DefaultMaxReplayEvents)
	defInt(&o.MaxReplayBytes, DefaultMaxReplayBytes)
	defInt(&o.MaxStreamsPerConnection, DefaultMaxStreamsPerConn)
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultMaxConnections()
	}
	if o.MemoryWatermark == 0 {
		o.MemoryWatermark = int64(DefaultMemoryWatermark())
	}
	defInt(&o.MaxHistoryStreams, DefaultMaxHistoryStreams)
	if o.MaxHistoryBytes == 0 {
		o.MaxHistoryBytes = DefaultMaxHistoryBytes
	}
	if o.MaxStreamHistoryBytes == 0 {
		o.MaxStreamHistoryBytes = DefaultMaxStreamHistoryBytes
	}
	if o.OutboxBytes == 0 {
		o.OutboxBytes = DefaultOutboxBytes
	}
	if o.MaxSeqGap == 0 {
		o.MaxSeqGap = DefaultMaxSeqGap
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.HistorySize < 0 {
		o.HistorySize = 0
	}
	if o.PeerToken == "" {
		o.PeerToken = o.InternalToken
	}
	if o.PublishToken == "" {
		o.PublishToken = o.InternalToken
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
}

// Validate reports every problem with the options, not just the first.
func (o *Options) Validate() error {
	var errs []error
	if o.PeerFinder == nil {
		errs = append(errs, errors.New("a PeerFinder is required"))
	}
	neg := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", name, d))
		}
	}
	neg("Heartbeat", o.Heartbeat)
	neg("Retry", o.Retry)
	neg("MaxConnectionTime", o.MaxConnectionTime)
	neg("WriteTimeout", o.WriteTimeout)
	neg("PeerTimeout", o.PeerTimeout)
	neg("HistoryAge", o.HistoryAge)
	neg("PeerCutoff", o.PeerCutoff)
	neg("LivenessStall", o.LivenessStall)
	neg("InternalReadTimeout", o.InternalReadTimeout)
	switch o.Compression {
	case "", CompressionOff, CompressionGzip:
	default:
		errs = append(errs, fmt.Errorf("Compression must be %q or %q, got %q", CompressionGzip, CompressionOff, o.Compression))
	}
	if o.OutboxBytes < 0 {
		errs = append(errs, fmt.Errorf("OutboxBytes must not be negative, got %d", o.OutboxBytes))
	}
	if o.PeerToken != "" && o.PeerToken == o.PublishToken && o.InternalToken == "" {
		errs = append(errs, errors.New("PeerToken and PublishToken must differ: a publisher must not be able to pose as a peer"))
	}
	if o.PeerBackoffMin < 0 || o.PeerBackoffMax < o.PeerBackoffMin && o.PeerBackoffMax != 0 {
		errs = append(errs, fmt.Errorf("peer backoff must satisfy 0 <= min <= max, got %s and %s", o.PeerBackoffMin, o.PeerBackoffMax))
	}
	for name, v := range map[string]int{"SubscriberQueue": o.SubscriberQueue, "PeerQueue": o.PeerQueue, "OutboxSize": o.OutboxSize, "MaxOriginsPerPeer": o.MaxOriginsPerPeer, "PeerBatch": o.PeerBatch, "MaxBatchEvents": o.MaxBatchEvents} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %d", name, v))
		}
	}
	if o.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxBodyBytes must not be negative, got %d", o.MaxBodyBytes))
	}
	if o.PeerPort < 0 || o.PeerPort > 65535 {
		errs = append(errs, fmt.Errorf("PeerPort must be a port number, got %d", o.PeerPort))
	}
	return errors.Join(errs...)
}
