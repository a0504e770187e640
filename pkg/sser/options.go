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
	// CORSOrigins lists the origins allowed to subscribe from a browser on
	// another origin; "*" allows any. Empty sends no CORS headers.
	CORSOrigins []string

	// AllowStream, when set, decides whether a request may subscribe to a
	// stream. A refused subscription is answered 204 No Content, which tells
	// EventSource and other SSE clients to stop reconnecting.
	AllowStream func(r *http.Request, stream string) bool

	// InternalToken, when set, is required as "Authorization: Bearer <token>"
	// on the internal event endpoints (send, publish, history, origins); peers
	// send it too, so every replica must share it. Probes and metrics stay open.
	InternalToken string

	// PeerQueue is how many events may wait for one peer; past it the oldest
	// are dropped and counted (default 10000).
	PeerQueue int
	// PeerBatch is the most events sent in one POST (default 500).
	PeerBatch int
	// PeerTimeout bounds one POST to a peer (default 10s).
	PeerTimeout time.Duration
	// PeerBackoffMin and PeerBackoffMax bound the retry backoff (default 100ms and 5s).
	PeerBackoffMin, PeerBackoffMax time.Duration

	// MaxBodyBytes limits a request body on the internal endpoints (default 1 MiB).
	MaxBodyBytes int64
	// MaxBatchEvents limits the events in one request (default 10000).
	MaxBatchEvents int

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
	DefaultSubscriberQueue = 1024
	DefaultPeerQueue       = 10000
	DefaultPeerBatch       = 500
	DefaultPeerTimeout     = 10 * time.Second
	DefaultMaxBodyBytes    = 1 << 20
	DefaultMaxBatchEvents  = 10000
	DefaultHistorySize     = 1000
	DefaultHistoryAge      = 5 * time.Minute
)

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
	def(&o.HistoryAge, DefaultHistoryAge)
	def(&o.WarmUpTimeout, 15*time.Second)
	def(&o.AntiEntropyInterval, 2*time.Second)
	defInt(&o.SubscriberQueue, DefaultSubscriberQueue)
	defInt(&o.PeerQueue, DefaultPeerQueue)
	defInt(&o.PeerBatch, DefaultPeerBatch)
	defInt(&o.MaxBatchEvents, DefaultMaxBatchEvents)
	defInt(&o.HistorySize, DefaultHistorySize)
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.HistorySize < 0 {
		o.HistorySize = 0
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
	if o.PeerBackoffMin < 0 || o.PeerBackoffMax < o.PeerBackoffMin && o.PeerBackoffMax != 0 {
		errs = append(errs, fmt.Errorf("peer backoff must satisfy 0 <= min <= max, got %s and %s", o.PeerBackoffMin, o.PeerBackoffMax))
	}
	for name, v := range map[string]int{"SubscriberQueue": o.SubscriberQueue, "PeerQueue": o.PeerQueue, "PeerBatch": o.PeerBatch, "MaxBatchEvents": o.MaxBatchEvents} {
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
