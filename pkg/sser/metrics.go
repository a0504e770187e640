package sser

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one Server's Prometheus metrics, on a registry of its own so
// several servers can live in one process (tests, embedding).
type metrics struct {
	registry *prometheus.Registry

	connections      prometheus.Gauge
	connectionsTotal prometheus.Counter
	wsConnections    prometheus.Gauge
	wsMessages       *prometheus.CounterVec
	connectionsGzip  prometheus.Counter
	subscriberClosed *prometheus.CounterVec
	eventsPublished  prometheus.Counter
	eventsIn         *prometheus.CounterVec
	appliedBySource  sync.Map // source -> prometheus.Counter
	eventsDuplicate  prometheus.Counter
	eventsLost       prometheus.Counter
	eventsDeferred   prometheus.Counter
	backPressure     prometheus.Counter
	peerRefused      *prometheus.CounterVec
	peerCutoffs      *prometheus.CounterVec
	idempotentHits   prometheus.Counter
	authFailures     *prometheus.CounterVec
	replayTruncated  prometheus.Counter
	refused          *prometheus.CounterVec
	framesQueued     prometheus.Counter
	bytesWritten     prometheus.Counter
	replayed         prometheus.Counter
	resumes          *prometheus.CounterVec
	historyEvicted   prometheus.Counter
	retainedStreams  prometheus.Gauge
	repairs          *prometheus.CounterVec
	warmups          *prometheus.CounterVec
	badRequests      *prometheus.CounterVec

	peers            prometheus.Gauge
	peerEventsSent   *prometheus.CounterVec
	peerPostDuration *prometheus.HistogramVec
	peerPostErrors   *prometheus.CounterVec
	peerRequests     *prometheus.CounterVec
	peerUp           *prometheus.GaugeVec
	peerInfo         *prometheus.GaugeVec

	deliveryLatency prometheus.Histogram

	// known is, for each counter whose label takes a known, finite set of
	// values, those values: each series is exported at 0 from the start.
	known map[string][]string
}

// The values of the labels that take a known, finite set: each series of
// their counters exists at 0 from the start, so rate() and alerts work
// before the first occurrence. The help texts list them from here.
var (
	closeReasonValues  = []string{"overflow", "drain", "max_age", "shutdown", "pong_timeout"}
	wsMessageValues    = []string{"subscribe", "unsubscribe"}
	sourceValues       = []string{"local", "peer", "repair", "reordered", "warmup"}
	peerRefusalValues  = []string{"not_peer", "origin_owner", "origins_per_peer", "seq_jump", "mixed_origins"}
	authEndpointValues = []string{"events", "publish", "send", "history", "origins", "tickets"}
	// limitValues: frontend_connections is counted by the binary's listener (CountRefused).
	limitValues        = []string{"connections", "connections_per_ip", "connection_rate", "streams_per_connection", "publish_rate", "credential_failures", "memory", "peer_streams_per_ip", "status_streams", "frontend_connections"}
	resumeResultValues = []string{"exact", "lost"}
	repairResultValues = []string{"repaired", "failed", "anti_entropy"}
	warmupResultValues = []string{"copied", "empty"}
)

// deliveryLatencyBuckets span 100 µs to 10 s in steps of 1, 2.5, 5.
var deliveryLatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func newMetrics(reg *prometheus.Registry) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{registry: reg, known: make(map[string][]string)}
	m.connections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sser_connections", Help: "SSE subscribers connected now."})
	m.connectionsTotal = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_connections_total", Help: "SSE subscriptions accepted."})
	m.wsConnections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sser_websocket_connections", Help: "Subscribers connected now over WebSocket (counted in sser_connections too)."})
	m.wsMessages = m.knownCounterVec("sser_websocket_messages_total", "Messages WebSocket clients sent that were applied, by type", "type", wsMessageValues)
	m.connectionsGzip = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_connections_compressed_total", Help: "SSE subscriptions answered with gzip (Options.Compression, and the client sent Accept-Encoding: gzip)."})
	m.subscriberClosed = m.knownCounterVec("sser_subscribers_closed_total", "Subscribers disconnected by the server, by reason (overflow: fell behind its queue; pong_timeout: a WebSocket client that answered no ping)", "reason", closeReasonValues)
	m.eventsPublished = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_published_total", Help: "Events published through this replica (Send and the publish endpoint)."})
	m.eventsIn = m.knownCounterVec("sser_events_applied_total", "Events applied to this replica's subscribers and history, by source", "source", sourceValues)
	m.eventsDuplicate = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_duplicate_total", Help: "Events received again (a retried batch) and dropped."})
	m.eventsLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_lost_total", Help: "Events of an origin given up because neither it nor any peer held them; every subscriber was told (sser-lost)."})
	m.eventsDeferred = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_deferred_total", Help: "Events past a gap not held because the holding bounds were reached; the gap repair fetches them again from their origin."})
	m.backPressure = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_publish_backpressure_total", Help: "Publishes refused with 503 because a peer lagged by the whole outbox."})
	m.peerRefused = m.knownCounterVec("sser_peer_events_refused_total", "Peer deliveries refused, by reason", "reason", peerRefusalValues)
	m.peerCutoffs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_cutoffs_total", Help: "Times a peer that held publishers back longer than the peer cut-off was made to skip what the outbox no longer holds."}, []string{"peer"})
	m.idempotentHits = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_publish_idempotent_replays_total", Help: "Publishes answered from the idempotency window instead of being published again."})
	m.authFailures = m.knownCounterVec("sser_auth_failures_total", "Requests refused for wrong credentials, by endpoint", "endpoint", authEndpointValues)
	m.replayTruncated = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_replay_truncated_total", Help: "Resumes that missed more than one replay may send: the oldest part was sent and the client resumes again for the rest."})
	m.refused = m.knownCounterVec("sser_refused_total", "Requests refused by a limit, by limit (frontend_connections: by the binary's listener)", "limit", limitValues)
	m.framesQueued = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_frames_queued_total", Help: "Event frames queued to subscribers (one per event per subscriber)."})
	m.bytesWritten = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_bytes_written_total", Help: "Bytes written to SSE subscribers."})
	m.replayed = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_replayed_total", Help: "Events replayed from history to resuming subscribers."})
	m.resumes = m.knownCounterVec("sser_resumes_total", "Subscriptions that gave a Last-Event-ID, by result", "result", resumeResultValues)
	m.historyEvicted = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_history_evicted_total", Help: "Events evicted from history by its size or age limit."})
	m.retainedStreams = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sser_retained_streams", Help: "Streams with a retained event (or a recent clear of one) on this replica."})
	m.repairs = m.knownCounterVec("sser_gap_repairs_total", "Gap repairs, by result (anti_entropy: repairs started by comparing notes with a peer)", "result", repairResultValues)
	m.warmups = m.knownCounterVec("sser_warmups_total", "Start-up history warm-ups, by result (copied from a peer, or empty)", "result", warmupResultValues)
	m.badRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_bad_requests_total", Help: "Requests answered with a 4xx, by endpoint and status."}, []string{"endpoint", "code"})
	m.peers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sser_peers", Help: "Replicas in the current peer set, this one included."})
	m.peerEventsSent = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_events_sent_total", Help: "Events a peer acknowledged."}, []string{"peer"})
	m.peerPostDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sser_peer_post_duration_seconds", Help: "Time from writing a batch to a peer to its acknowledgement. On a delivery stream the peer holds its answers until asked, up to 2 s: on a quiet stream 1-2 s is the design, not the peer's speed (a slow peer shows in sser_peer_lag and sser_peer_post_errors_total); under load answers come at once. For a one-shot POST, its round trip.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"peer"})
	m.peerPostErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_post_errors_total", Help: "Failed deliveries to a peer: delivery streams that broke, timed out or were refused, and failed one-shot POSTs (what was not acknowledged is sent again while the peer is in the set)."}, []string{"peer"})
	version, revision := buildVersion()
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sser_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()}}, func() float64 { return 1 }))
	m.peerUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sser_peer_up", Help: "1 while deliveries to a peer succeed, 0 from its second failed attempt in a row until one succeeds again (or, with nothing waiting for it, until it takes a delivery stream)."}, []string{"peer"})
	m.peerRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_requests_total", Help: "HTTP requests opened to a peer for deliveries: each delivery stream opened, and each one-shot POST to a peer that does not stream."}, []string{"peer"})
	m.peerInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sser_peer_info", Help: "1 for each peer in the set but this replica: peer is the label the other sser_peer_* series carry (the pod name where the peer finder knows it, else the IP), address its IP and port."}, []string{"peer", "address"})
	m.deliveryLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sser_delivery_latency_seconds", Help: "Time from an event's acceptance by the replica it was published on to its write to a subscriber's connection here, for the oldest event of each write (live events only, not replays). Across replicas it includes their clock difference; from a replica that does not send the time, it is counted from the event's arrival here.", Buckets: deliveryLatencyBuckets})
	for _, c := range []prometheus.Collector{m.connections, m.connectionsTotal, m.wsConnections, m.wsMessages, m.connectionsGzip, m.subscriberClosed, m.eventsPublished, m.eventsIn,
		m.eventsDuplicate, m.eventsLost, m.eventsDeferred, m.backPressure, m.peerRefused, m.peerCutoffs, m.idempotentHits, m.authFailures, m.replayTruncated, m.refused, m.framesQueued, m.bytesWritten, m.replayed, m.resumes, m.historyEvicted, m.retainedStreams, m.repairs, m.warmups,
		m.badRequests, m.peers, m.peerEventsSent, m.peerPostDuration, m.peerPostErrors, m.peerRequests, m.peerUp, m.peerInfo, m.deliveryLatency} {
		f(c)
	}
	return m
}

// applied is the applied-events counter of source, resolved once per
// source instead of hashing the label on every event.
func (m *metrics) applied(source string) prometheus.Counter {
	if c, ok := m.appliedBySource.Load(source); ok {
		return c.(prometheus.Counter)
	}
	c := m.eventsIn.WithLabelValues(source)
	m.appliedBySource.Store(source, c)
	return c
}

// knownCounterVec is a counter by one label whose values are known: help
// gets them listed, and each series starts at 0.
func (m *metrics) knownCounterVec(name, help, label string, values []string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help + ": " + strings.Join(values, ", ") + "."}, []string{label})
	for _, val := range values {
		v.WithLabelValues(val)
	}
	m.known[name] = values
	return v
}

// observeDelivery counts a write to a subscriber whose oldest live event
// was accepted by its origin at born (Unix microseconds; 0: none).
func (m *metrics) observeDelivery(born int64) {
	if born == 0 {
		return
	}
	d := time.Now().UnixMicro() - born
	m.deliveryLatency.Observe(float64(max(d, 0)) / 1e6)
}

func jsonStrings(s []string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// buildVersion is the module version and VCS revision the binary was built
// from, as far as the build recorded them.
func buildVersion() (version, revision string) {
	version, revision = "dev", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		version = v
	}
	for _, st := range bi.Settings {
		if st.Key == "vcs.revision" {
			revision = st.Value
		}
	}
	return version, revision
}
