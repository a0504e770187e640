package sser

import (
	"cmp"
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The status endpoints, on the internal listener: a page for a person,
// the same data as JSON, and a stream of it (status_page.go serves the
// page and the stream).
const (
	// StatusPagePath is the live status page (HTML).
	StatusPagePath = "/status"
	// StatusURLPath answers the replica's Status as JSON.
	StatusURLPath = "/api/json/v1/status"
	// StatusEventsURLPath streams the Status as text/event-stream, one
	// snapshot a second, until the replica drains or stops.
	StatusEventsURLPath = "/api/json/v1/status/events"
)

// Status is what one replica knows of itself and its peers, as
// GET /api/json/v1/status answers it. Counters are totals since the
// replica started; rates are per second over the last sample interval.
type Status struct {
	// Time is when the snapshot was taken.
	Time time.Time `json:"time"`
	// Replica is this replica.
	Replica ReplicaStatus `json:"replica"`
	// Peers are the other replicas in the peer set: those that count as
	// down first, then by address.
	Peers []PeerStatus `json:"peers"`
	// Connections are this replica's SSE subscribers.
	Connections ConnectionStatus `json:"connections"`
	// Rates are events per second over the last sample interval.
	Rates RateStatus `json:"rates"`
	// History is what this replica holds for resuming clients.
	History HistoryStatus `json:"history"`
	// Outbox is this replica's own events held for peers and repairs.
	Outbox OutboxStatus `json:"outbox"`
	// Counters are totals since start (the same as the Prometheus metrics
	// named in each field's comment).
	Counters CounterStatus `json:"counters"`
	// Samples are the last minutes of rates and connections, oldest
	// first, for charts.
	Samples StatusSamples `json:"samples"`
}

// ReplicaStatus describes this replica.
type ReplicaStatus struct {
	// Origin is this process incarnation's origin id: the name its events
	// carry in every id.
	Origin string `json:"origin"`
	// PodName and PodIP are the replica's pod, when known.
	PodName string `json:"podName,omitempty"`
	PodIP   string `json:"podIP,omitempty"`
	// InternalAddr is the address the internal listener is bound to.
	InternalAddr string `json:"internalAddr,omitempty"`
	// Version and Revision are the build's (sser_build_info).
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"goVersion"`
	// StartedAt is when the server was created; UptimeSeconds how long ago.
	StartedAt     time.Time `json:"startedAt"`
	UptimeSeconds float64   `json:"uptimeSeconds"`
	// State is one of: starting (the peer set is not known yet), warming
	// (copying history from a peer), ready, draining, stalled (the hub
	// made no progress for LivenessStall: /healthz fails), stopped.
	State string `json:"state"`
	// Failing names the readiness checks that fail now (as /readyz does).
	Failing []string `json:"failing"`
}

// PeerStatus is one peer as this replica's sender to it sees it.
type PeerStatus struct {
	// Address is the peer's address in the peer set.
	Address string `json:"address"`
	// PodName is the peer's pod, when the peer finder knows it.
	PodName string `json:"podName,omitempty"`
	// State is "up" or "down": down from the second failed delivery in a
	// row until one succeeds, or, with nothing waiting for the peer, until
	// it takes a delivery stream (sser_peer_up).
	State string `json:"state"`
	// DownSince is when the peer last turned down, while it is down.
	DownSince *time.Time `json:"downSince,omitempty"`
	// LastError and LastErrorAt are the last failed delivery's error and
	// time, if any failed since the peer joined.
	LastError   string     `json:"lastError,omitempty"`
	LastErrorAt *time.Time `json:"lastErrorAt,omitempty"`
	// Queue is how many of this replica's events the peer has not
	// acknowledged (sser_peer_lag).
	Queue uint64 `json:"queue"`
	// LagSeconds is how long the peer's acknowledgements have not moved
	// while events waited for it (0 when it has everything), as seen by
	// the status sampler, so to within a couple of seconds.
	LagSeconds float64 `json:"lagSeconds"`
	// CutOff is set while the peer is cut off (it held publishers back for
	// longer than PeerCutoff): it skips what the outbox no longer holds.
	CutOff bool `json:"cutOff"`
	// HoldingBackSince is when the peer started holding publishers back
	// (back-pressure), while it does.
	HoldingBackSince *time.Time `json:"holdingBackSince,omitempty"`
	// EventsSent counts events the peer acknowledged
	// (sser_peer_events_sent_total); Errors failed deliveries
	// (sser_peer_post_errors_total).
	EventsSent float64 `json:"eventsSent"`
	Errors     float64 `json:"errors"`
}

// ConnectionStatus counts SSE subscribers.
type ConnectionStatus struct {
	// Total is the subscribers connected now (sser_connections).
	Total int `json:"total"`
	// Streams is how many streams have at least one subscriber.
	Streams int `json:"streams"`
	// Top are the streams with the most subscribers, at most 10, most
	// first. A subscriber of several streams, or of a pattern, counts on
	// each stream it receives that this replica knows of. Streams and
	// Top are counted at most every 5 s: it takes a walk over every stream.
	Top []StreamConnections `json:"top"`
}

// StreamConnections is one stream's subscriber count.
type StreamConnections struct {
	Stream      string `json:"stream"`
	Subscribers int    `json:"subscribers"`
}

// RateStatus are events per second over the last sample interval.
type RateStatus struct {
	// Publish: events published through this replica.
	Publish float64 `json:"publish"`
	// Applied: events applied here, from every origin.
	Applied float64 `json:"applied"`
	// Delivery: event frames queued to this replica's subscribers.
	Delivery float64 `json:"delivery"`
}

// HistoryStatus is what the replica holds for resuming clients.
type HistoryStatus struct {
	// Events and Bytes held, on Streams streams.
	Events  int   `json:"events"`
	Bytes   int64 `json:"bytes"`
	Streams int   `json:"streams"`
	// OldestAgeSeconds is the age of the oldest event held (0 when none).
	OldestAgeSeconds float64 `json:"oldestAgeSeconds"`
}

// OutboxStatus is this replica's outbox.
type OutboxStatus struct {
	// Events and Bytes held; LastSeq is the seq of the newest event.
	Events  int    `json:"events"`
	Bytes   int64  `json:"bytes"`
	LastSeq uint64 `json:"lastSeq"`
}

// CounterStatus are totals since start.
type CounterStatus struct {
	// Published (sser_events_published_total) and Applied
	// (sser_events_applied_total, every source) events.
	Published float64 `json:"published"`
	Applied   float64 `json:"applied"`
	// OverflowDisconnects: subscribers disconnected because they fell
	// behind their queue (sser_subscribers_closed_total{reason="overflow"}).
	OverflowDisconnects float64 `json:"overflowDisconnects"`
	// Repairs: gaps repaired; RepairsFailed: gaps given up
	// (sser_gap_repairs_total).
	Repairs       float64 `json:"repairs"`
	RepairsFailed float64 `json:"repairsFailed"`
	// ResumesExact and ResumesLost: subscriptions that resumed with every
	// missed event, or with some no longer held (sser_resumes_total).
	ResumesExact float64 `json:"resumesExact"`
	ResumesLost  float64 `json:"resumesLost"`
	// EventsLost: events given up (sser_events_lost_total).
	EventsLost float64 `json:"eventsLost"`
	// LostNotices: sser-lost notices sent: one to every subscriber for
	// each range of events given up, and one to each resume that lost
	// events (so ResumesLost of them).
	LostNotices float64 `json:"lostNotices"`
	// BackPressure: publishes refused with 503 because a peer lagged by
	// the whole outbox (sser_publish_backpressure_total); PeerCutoffs:
	// peers cut off (sser_peer_cutoffs_total).
	BackPressure float64 `json:"backPressure"`
	PeerCutoffs  float64 `json:"peerCutoffs"`
}

// StatusSamples are rates and connections sampled every IntervalSeconds,
// oldest first, the arrays index-aligned.
type StatusSamples struct {
	IntervalSeconds float64 `json:"intervalSeconds"`
	// Times are the sample times in Unix milliseconds.
	Times       []int64   `json:"times"`
	Publish     []float64 `json:"publish"`
	Applied     []float64 `json:"applied"`
	Delivery    []float64 `json:"delivery"`
	Connections []int     `json:"connections"`
}

const (
	// statusSampleEvery and statusSampleCount keep five minutes of samples.
	statusSampleEvery = 2 * time.Second
	statusSampleCount = 150
	// statusCacheFor is how long a snapshot is served again: however many
	// pages are open, the hub's stream registry is walked at most this
	// often.
	statusCacheFor = 500 * time.Millisecond
	// statusTopStreams is how many streams Connections.Top lists, counted
	// at most every statusTopEvery: a walk over 100,000 streams holds the
	// hub's lock for about 15 ms.
	statusTopStreams = 10
	statusTopEvery   = 5 * time.Second
)

// statusSample is one point of the charts.
type statusSample struct {
	at                         time.Time
	publish, applied, delivery float64 // per second since the sample before
	connections                int
}

// counterTotals are the counters rates are computed from.
type counterTotals struct {
	at                         time.Time
	published, applied, frames float64
}

// lagMark is where a peer's acknowledgements stood, and since when.
type lagMark struct {
	acked uint64
	since time.Time
}

// statusTracker gathers the Status. It samples counters that exist
// anyway, on its own clock, so it adds nothing to publishing or delivery;
// it takes the hub's and the outbox's locks only to copy a few numbers,
// at most once per statusCacheFor however many clients ask.
type statusTracker struct {
	s       *ServerImpl
	started time.Time
	streams atomic.Int32 // status streams open

	mu      sync.Mutex
	samples []statusSample // ring of statusSampleCount
	head    int            // index of the oldest sample once full
	prev    counterTotals  // the counters at the last sample
	marks   map[string]lagMark
	cached  *Status
	encoded []byte // cached as JSON
	// top and streams are the last count of subscribers per stream, at topAt.
	top        []StreamConnections
	topStreams int
	topAt      time.Time
}

func newStatusTracker(s *ServerImpl, now time.Time) *statusTracker {
	return &statusTracker{s: s, started: now, marks: make(map[string]lagMark),
		prev: counterTotals{at: now}}
}

// run samples every statusSampleEvery until ctx ends.
func (t *statusTracker) run(ctx context.Context) {
	tick := time.NewTicker(statusSampleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			t.sample(now)
		}
	}
}

// totals reads the counters the rates come from.
func (t *statusTracker) totals(now time.Time) counterTotals {
	m := t.s.m
	return counterTotals{at: now, published: metricValue(m.eventsPublished),
		applied: sumVec(m.eventsIn, "", ""), frames: metricValue(m.framesQueued)}
}

// sample adds a point to the charts and moves the peers' lag marks on.
func (t *statusTracker) sample(now time.Time) {
	cur := t.totals(now)
	conns := int(metricValue(t.s.m.connections))
	peers := t.s.bc.peerSnapshots()
	t.mu.Lock()
	defer t.mu.Unlock()
	sec := cur.at.Sub(t.prev.at).Seconds()
	if sec <= 0 {
		return
	}
	p := statusSample{at: now, connections: conns,
		publish:  (cur.published - t.prev.published) / sec,
		applied:  (cur.applied - t.prev.applied) / sec,
		delivery: (cur.frames - t.prev.frames) / sec}
	t.prev = cur
	if len(t.samples) < statusSampleCount {
		t.samples = append(t.samples, p)
	} else {
		t.samples[t.head] = p
		t.head = (t.head + 1) % statusSampleCount
	}
	t.markLagsLocked(now, peers)
}

// markLagsLocked notes, per peer, since when its acknowledgements have
// stood still while events waited.
func (t *statusTracker) markLagsLocked(now time.Time, peers []peerSnapshot) {
	seen := make(map[string]bool, len(peers))
	for _, p := range peers {
		seen[p.addr] = true
		if p.cursor.lag == 0 {
			delete(t.marks, p.addr)
			continue
		}
		if m, ok := t.marks[p.addr]; !ok || m.acked != p.cursor.acked {
			t.marks[p.addr] = lagMark{acked: p.cursor.acked, since: now}
		}
	}
	for addr := range t.marks {
		if !seen[addr] {
			delete(t.marks, addr)
		}
	}
}

// snapshot is the Status and its JSON encoding, computed afresh at most
// once per statusCacheFor, and at once when the replica's state changed.
func (t *statusTracker) snapshot(now time.Time) (*Status, []byte) {
	state, _ := t.s.statusState(now)
	t.mu.Lock()
	if c := t.cached; c != nil && now.Sub(c.Time) < statusCacheFor && !now.Before(c.Time) && c.Replica.State == state {
		defer t.mu.Unlock()
		return c, t.encoded
	}
	t.mu.Unlock()
	st := t.compute(now)
	b, _ := json.Marshal(st)
	t.mu.Lock()
	t.cached, t.encoded = st, b
	t.mu.Unlock()
	return st, b
}

// Status is the replica's status now, as GET /api/json/v1/status answers
// it (which may serve a snapshot up to half a second old).
func (s *ServerImpl) Status() Status { return *s.status.compute(time.Now()) }

// compute gathers the status. Each part takes its own lock briefly:
// the parts are not one atomic picture, and need not be.
func (t *statusTracker) compute(now time.Time) *Status {
	s := t.s
	m := s.m
	version, revision := buildVersion()
	state, failing := s.statusState(now)
	st := &Status{
		Time: now,
		Replica: ReplicaStatus{Origin: s.origin, PodName: s.opts.PodName, PodIP: s.opts.PodIP, InternalAddr: s.InternalAddr(),
			Version: version, Revision: revision, GoVersion: runtime.Version(),
			StartedAt: t.started, UptimeSeconds: now.Sub(t.started).Seconds(), State: state, Failing: failing},
		Counters: CounterStatus{
			Published:           metricValue(m.eventsPublished),
			Applied:             sumVec(m.eventsIn, "", ""),
			OverflowDisconnects: sumVec(m.subscriberClosed, "reason", reasonOverflow.String()),
			Repairs:             sumVec(m.repairs, "result", "repaired"),
			RepairsFailed:       sumVec(m.repairs, "result", "failed"),
			ResumesExact:        sumVec(m.resumes, "result", "exact"),
			ResumesLost:         sumVec(m.resumes, "result", "lost"),
			EventsLost:          metricValue(m.eventsLost),
			BackPressure:        metricValue(m.backPressure),
			PeerCutoffs:         sumVec(m.peerCutoffs, "", ""),
		},
	}
	st.Counters.LostNotices = float64(s.hub.lostNotices.Load()) + st.Counters.ResumesLost

	t.mu.Lock()
	countStreams := t.topAt.IsZero() || now.Sub(t.topAt) >= statusTopEvery || now.Before(t.topAt)
	t.mu.Unlock()
	hs := s.hub.statusCounts(statusTopStreams, countStreams)
	t.mu.Lock()
	if countStreams {
		t.top, t.topStreams, t.topAt = hs.top, hs.streams, now
	}
	st.Connections = ConnectionStatus{Total: hs.subscribers, Streams: t.topStreams, Top: t.top}
	t.mu.Unlock()
	st.History = HistoryStatus{Events: hs.histEvents, Bytes: hs.histBytes, Streams: hs.histStreams}
	if !hs.oldest.IsZero() {
		st.History.OldestAgeSeconds = max(now.Sub(hs.oldest).Seconds(), 0)
	}
	st.Outbox = s.out.status()

	peers := s.bc.peerSnapshots()
	t.mu.Lock()
	t.markLagsLocked(now, peers)
	st.Peers = make([]PeerStatus, 0, len(peers))
	for _, p := range peers {
		ps := PeerStatus{Address: p.addr, PodName: p.name, State: "up", Queue: p.cursor.lag, CutOff: p.cursor.cut,
			EventsSent: metricValue(p.sent), Errors: metricValue(p.errs)}
		if p.down {
			ps.State = "down"
			ps.DownSince = timePtr(p.downSince)
		}
		if p.lastErr != nil {
			ps.LastError, ps.LastErrorAt = p.lastErr.msg, timePtr(p.lastErr.at)
		}
		if mk, ok := t.marks[p.addr]; ok {
			ps.LagSeconds = max(now.Sub(mk.since).Seconds(), 0)
		}
		if !p.cursor.pressureSince.IsZero() {
			ps.HoldingBackSince = timePtr(p.cursor.pressureSince)
		}
		st.Peers = append(st.Peers, ps)
	}
	st.Samples = t.samplesLocked()
	if n := len(t.samples); n > 0 {
		last := t.samples[(t.head+n-1)%n]
		st.Rates = RateStatus{Publish: last.publish, Applied: last.applied, Delivery: last.delivery}
	}
	t.mu.Unlock()
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int {
		if a.State != b.State {
			if a.State == "down" {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Address, b.Address)
	})
	return st
}

func (t *statusTracker) samplesLocked() StatusSamples {
	n := len(t.samples)
	out := StatusSamples{IntervalSeconds: statusSampleEvery.Seconds(), Times: make([]int64, 0, n),
		Publish: make([]float64, 0, n), Applied: make([]float64, 0, n), Delivery: make([]float64, 0, n), Connections: make([]int, 0, n)}
	for i := range n {
		p := t.samples[(t.head+i)%n]
		out.Times = append(out.Times, p.at.UnixMilli())
		out.Publish = append(out.Publish, round3(p.publish))
		out.Applied = append(out.Applied, round3(p.applied))
		out.Delivery = append(out.Delivery, round3(p.delivery))
		out.Connections = append(out.Connections, p.connections)
	}
	return out
}

// round3 keeps three decimals: the charts need no more, and the JSON
// stays short.
func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// statusState names the replica's state and the readiness checks that fail.
func (s *ServerImpl) statusState(now time.Time) (string, []string) {
	failing := []string{}
	for _, c := range s.readinessChecks() {
		if !c.ok {
			failing = append(failing, c.name)
		}
	}
	switch {
	case s.stopped.Load():
		return "stopped", failing
	case s.hub.stalledFor(now) > s.opts.LivenessStall:
		return "stalled", failing
	case s.draining.Load():
		return "draining", failing
	case !s.ready.Load():
		return "starting", failing
	case !s.warm.Load():
		return "warming", failing
	}
	return "ready", failing
}

// hubCounts are the hub's numbers for the status.
type hubCounts struct {
	subscribers, streams int
	top                  []StreamConnections
	histEvents           int
	histBytes            int64
	histStreams          int
	oldest               time.Time
}

// statusCounts copies the hub's numbers; with perStream, it also counts
// the subscribers of each stream, walking the stream registry (a map read,
// no allocation but the top list) under the hub's lock.
func (h *hub) statusCounts(topN int, perStream bool) hubCounts {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := hubCounts{subscribers: len(h.subs), histEvents: h.hist.len(), histBytes: h.hist.bytes, histStreams: h.hist.streams}
	if h.hist.all.r.len() > 0 {
		c.oldest = h.hist.all.r.at(0).at
	}
	if !perStream {
		return c
	}
	c.top = make([]StreamConnections, 0, topN+1)
	for name, ss := range h.streams {
		n := len(ss.subs)
		for _, set := range ss.sets {
			n += len(set.subs)
		}
		if n == 0 {
			continue
		}
		c.streams++
		if len(c.top) == topN && !moreSubscribers(n, name, c.top[topN-1]) {
			continue
		}
		i, _ := slices.BinarySearchFunc(c.top, StreamConnections{Stream: name, Subscribers: n}, func(a, b StreamConnections) int {
			if moreSubscribers(a.Subscribers, a.Stream, b) {
				return -1
			}
			return 1
		})
		c.top = slices.Insert(c.top, i, StreamConnections{Stream: name, Subscribers: n})
		if len(c.top) > topN {
			c.top = c.top[:topN]
		}
	}
	return c
}

// moreSubscribers orders streams by subscribers, most first, then by name.
func moreSubscribers(n int, name string, than StreamConnections) bool {
	if n != than.Subscribers {
		return n > than.Subscribers
	}
	return name < than.Stream
}

// outboxCursor is one peer's place in the outbox, for the status.
type outboxCursor struct {
	acked, lag    uint64
	cut           bool
	pressureSince time.Time
}

// status copies the outbox's numbers.
func (o *outbox) status() OutboxStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	return OutboxStatus{Events: o.n, Bytes: o.bytes, LastSeq: o.last}
}

// cursorOf copies peer's cursor.
func (o *outbox) cursorOf(peer string) outboxCursor {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.cursors[peer]
	if c == nil {
		return outboxCursor{}
	}
	return outboxCursor{acked: c.acked, lag: o.last - c.acked, cut: c.cut, pressureSince: c.pressureSince}
}

// peerSnapshot is one sender's state, for the status.
type peerSnapshot struct {
	addr      string
	name      string // the pod's name, when the peer finder knows it
	down      bool
	downSince time.Time
	lastErr   *peerFailure
	cursor    outboxCursor
	sent      prometheus.Counter
	errs      prometheus.Counter
}

// peerSnapshots copies every sender's state: the senders under the
// broadcaster's lock, then each cursor under the outbox's.
func (b *broadcaster) peerSnapshots() []peerSnapshot {
	b.mu.Lock()
	out := make([]peerSnapshot, 0, len(b.senders))
	for addr, s := range b.senders {
		ser := s.series()
		p := peerSnapshot{addr: addr, down: s.down.Load(), lastErr: s.lastErr.Load(), sent: ser.sent, errs: ser.errs}
		if ser.label != addr {
			p.name = ser.label
		}
		if ns := s.downSince.Load(); p.down && ns != 0 {
			p.downSince = time.Unix(0, ns)
		}
		out = append(out, p)
	}
	b.mu.Unlock()
	for i := range out {
		out[i].cursor = b.out.cursorOf(out[i].addr)
	}
	return out
}

// metricValue reads a counter's or gauge's value.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if c == nil || c.Write(&m) != nil {
		return 0
	}
	if g := m.GetGauge(); g != nil {
		return g.GetValue()
	}
	return m.GetCounter().GetValue()
}

// sumVec sums the series of vec whose label is value (all series when
// label is ""), without creating any.
func sumVec(vec prometheus.Collector, label, value string) float64 {
	ch := make(chan prometheus.Metric)
	go func() {
		vec.Collect(ch)
		close(ch)
	}()
	sum := 0.0
	for c := range ch {
		var m dto.Metric
		if c.Write(&m) != nil {
			continue
		}
		if label != "" && !hasLabel(&m, label, value) {
			continue
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}
