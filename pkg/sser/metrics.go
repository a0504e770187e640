package sser

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"sync"

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
	repairs          *prometheus.CounterVec
	warmups          *prometheus.CounterVec
	badRequests      *prometheus.CounterVec

	peers            prometheus.Gauge
	peerEventsSent   *prometheus.CounterVec
	peerPostDuration *prometheus.HistogramVec
	peerPostErrors   *prometheus.CounterVec
	peerRequests     *prometheus.CounterVec
	peerUp           *prometheus.GaugeVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{registry: reg}
	m.connections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sser_connections", Help: "SSE subscribers connected now."})
	m.connectionsTotal = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_connections_total", Help: "SSE subscriptions accepted."})
	m.wsConnections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sser_websocket_connections", Help: "Subscribers connected now over WebSocket (counted in sser_connections too)."})
	m.wsMessages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_websocket_messages_total", Help: "Messages WebSocket clients sent that were applied, by type (subscribe, unsubscribe)."}, []string{"type"})
	m.subscriberClosed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_subscribers_closed_total", Help: "Subscribers disconnected by the server, by reason (overflow: fell behind its queue; drain; max_age; shutdown; pong_timeout: a WebSocket client that answered no ping)."}, []string{"reason"})
	m.eventsPublished = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_published_total", Help: "Events published through this replica (Send and the publish endpoint)."})
	m.eventsIn = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_events_applied_total", Help: "Events applied to this replica's subscribers and history, by source."}, []string{"source"})
	m.eventsDuplicate = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_duplicate_total", Help: "Events received again (a retried batch) and dropped."})
	m.eventsLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_lost_total", Help: "Events of an origin given up because neither it nor any peer held them; every subscriber was told (sser-lost)."})
	m.eventsDeferred = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_deferred_total", Help: "Events past a gap not held because the holding bounds were reached; the gap repair fetches them again from their origin."})
	m.backPressure = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_publish_backpressure_total", Help: "Publishes refused with 503 because a peer lagged by the whole outbox."})
	m.peerRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_events_refused_total", Help: "Peer deliveries refused, by reason (not_peer, origin_owner, origins_per_peer, seq_jump, mixed_origins)."}, []string{"reason"})
	m.peerCutoffs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_cutoffs_total", Help: "Times a peer that held publishers back longer than the peer cut-off was made to skip what the outbox no longer holds."}, []string{"peer"})
	m.idempotentHits = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_publish_idempotent_replays_total", Help: "Publishes answered from the idempotency window instead of being published again."})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_auth_failures_total", Help: "Requests refused for wrong credentials, by endpoint."}, []string{"endpoint"})
	m.replayTruncated = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_replay_truncated_total", Help: "Resumes that missed more than one replay may send: the oldest part was sent and the client resumes again for the rest."})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_refused_total", Help: "Requests refused by a limit, by limit (connections, connections_per_ip, connection_rate, streams_per_connection, publish_rate, credential_failures, memory, peer_streams_per_ip; frontend_connections from the binary's listener)."}, []string{"limit"})
	m.framesQueued = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_frames_queued_total", Help: "Event frames queued to subscribers (one per event per subscriber)."})
	m.bytesWritten = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_bytes_written_total", Help: "Bytes written to SSE subscribers."})
	m.replayed = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_events_replayed_total", Help: "Events replayed from history to resuming subscribers."})
	m.resumes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_resumes_total", Help: "Subscriptions that gave a Last-Event-ID, by result (exact, lost)."}, []string{"result"})
	m.historyEvicted = prometheus.NewCounter(prometheus.CounterOpts{Name: "sser_history_evicted_total", Help: "Events evicted from history by its size or age limit."})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_gap_repairs_total", Help: "Gap repairs, by result (repaired, failed; anti_entropy counts repairs started by comparing notes with a peer)."}, []string{"result"})
	m.warmups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_warmups_total", Help: "Start-up history warm-ups, by result (copied from a peer, or empty)."}, []string{"result"})
	m.badRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_bad_requests_total", Help: "Requests answered with a 4xx, by endpoint and status."}, []string{"endpoint", "code"})
	m.peers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sser_peers", Help: "Replicas in the current peer set, this one included."})
	m.peerEventsSent = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_events_sent_total", Help: "Events a peer acknowledged."}, []string{"peer"})
	m.peerPostDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sser_peer_post_duration_seconds", Help: "Time from sending a batch to a peer to its acknowledgement: a line of the delivery stream (the peer holds answers until asked, at most 2 s, so this includes that wait), or a one-shot POST.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"peer"})
	m.peerPostErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_post_errors_total", Help: "Failed deliveries to a peer: delivery streams that broke, timed out or were refused, and failed one-shot POSTs (what was not acknowledged is sent again while the peer is in the set)."}, []string{"peer"})
	version, revision := buildVersion()
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sser_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()}}, func() float64 { return 1 }))
	m.peerUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sser_peer_up", Help: "1 while deliveries to a peer succeed, 0 from its second failed attempt in a row until one succeeds again."}, []string{"peer"})
	m.peerRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sser_peer_requests_total", Help: "HTTP requests opened to a peer for deliveries: each delivery stream opened, and each one-shot POST to a peer that does not stream."}, []string{"peer"})
	for _, c := range []prometheus.Collector{m.connections, m.connectionsTotal, m.wsConnections, m.wsMessages, m.subscriberClosed, m.eventsPublished, m.eventsIn,
		m.eventsDuplicate, m.eventsLost, m.eventsDeferred, m.backPressure, m.peerRefused, m.peerCutoffs, m.idempotentHits, m.authFailures, m.replayTruncated, m.refused, m.framesQueued, m.bytesWritten, m.replayed, m.resumes, m.historyEvicted, m.repairs, m.warmups,
		m.badRequests, m.peers, m.peerEventsSent, m.peerPostDuration, m.peerPostErrors, m.peerRequests, m.peerUp} {
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

// forgetPeer removes a departed peer's series, so /metrics shows it gone.
func (m *metrics) forgetPeer(peer string) {
	m.peerEventsSent.DeleteLabelValues(peer)
	m.peerPostDuration.DeleteLabelValues(peer)
	m.peerPostErrors.DeleteLabelValues(peer)
	m.peerRequests.DeleteLabelValues(peer)
	m.peerUp.DeleteLabelValues(peer)
	m.peerCutoffs.DeleteLabelValues(peer)
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
