package sser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sser-dev/sser/pkg/peerfinder"
)

// broadcaster keeps one sender per peer. A sender is a cursor over the
// outbox: it sends what the peer has not acknowledged over one long-lived
// delivery stream, so publishing never waits for a peer and a peer that
// was away gets what it missed in order, from the outbox, when it is back.
type broadcaster struct {
	log   logr.Logger
	m     *metrics
	peers peerClient
	out   *outbox
	self  string
	opts  *Options
	// keepalive is how long a delivery stream may be idle before the
	// sender writes a keepalive line: a third of the read timeout (the
	// peer's is assumed the same as this replica's).
	keepalive time.Duration
	// streamRetry is how long a peer that refused a stream gets one POST
	// per batch before a stream is tried again.
	streamRetry time.Duration

	mu      sync.Mutex
	senders map[string]*peerSender
	set     []string
	wg      sync.WaitGroup
	closed  bool
}

func newBroadcaster(log logr.Logger, m *metrics, opts *Options, self string, peers peerClient, out *outbox) *broadcaster {
	b := &broadcaster{
		log:     log,
		m:       m,
		peers:   peers,
		out:     out,
		self:    self,
		opts:    opts,
		senders: make(map[string]*peerSender),

		keepalive:   max(opts.InternalReadTimeout/3, time.Millisecond),
		streamRetry: defaultStreamRetry,
	}
	m.registry.MustRegister(lagCollector{b})
	return b
}

// setPeers is setNamedPeers for peers known by IP alone.
func (b *broadcaster) setPeers(ctx context.Context, ips []string) {
	b.setNamedPeers(ctx, unnamed(ips))
}

// setNamedPeers starts senders for new peers and stops those for peers
// that left. A peer whose name changed (a new pod on the same IP) keeps its
// sender and gets its metric series under the new name.
func (b *broadcaster) setNamedPeers(ctx context.Context, peers []peerfinder.Peer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.set = make([]string, len(peers))
	for i, p := range peers {
		b.set[i] = p.IP
	}
	b.m.peers.Set(float64(len(peers)))
	want := make(map[string]bool, len(peers))
	for _, p := range peers {
		ip := p.IP
		if ip == b.self {
			continue
		}
		want[ip] = true
		label := peerLabel(p)
		if s, ok := b.senders[ip]; ok {
			if old := s.series(); old.label != label {
				s.ser.Store(b.m.peerSeries(label, ip, b.opts.PeerPort, !s.down.Load()))
				b.m.forgetPeer(old)
				b.log.Info("peer renamed", "peer", ip, "name", p.Name, "was", old.label)
			}
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		s := newPeerSender(b, ip, cancel)
		s.ser.Store(b.m.peerSeries(label, ip, b.opts.PeerPort, true))
		b.out.addPeer(ip)
		b.senders[ip] = s
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			s.run(sctx)
		}()
		b.log.Info("peer joined", "peer", ip, "name", p.Name)
	}
	for ip, s := range b.senders {
		if !want[ip] {
			s.cancel()
			delete(b.senders, ip)
			b.log.Info("peer left", "peer", ip, "name", s.series().label, "unacknowledged", b.out.lag(ip))
			b.out.removePeer(ip)
			b.m.forgetPeer(s.series())
		}
	}
}

// cutOff counts a cut-off of the peer at ip, while it is in the set (a
// peer that left has no series any more, and gets none back).
func (b *broadcaster) cutOff(ip string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.senders[ip]; ok {
		b.m.peerCutoffs.WithLabelValues(s.series().label).Inc()
	}
}

// downPeers lists the peers that count as down now.
func (b *broadcaster) downPeers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := []string{}
	for ip, s := range b.senders {
		if s.down.Load() {
			out = append(out, ip)
		}
	}
	slices.Sort(out)
	return out
}

// warn logs msg at WARN when the logger is backed by slog (the binary's),
// and as an ordinary line otherwise.
func warn(log logr.Logger, msg string, kv ...any) {
	slog.New(logr.ToSlogHandler(log)).Warn(msg, kv...)
}

// currentPeers is the last peer set, this replica included.
func (b *broadcaster) currentPeers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.set...)
}

// isPeer reports whether ip is in the current peer set.
func (b *broadcaster) isPeer(ip string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.set {
		if p == ip {
			return true
		}
	}
	return false
}

// wakeAll tells every sender that the outbox has new events.
func (b *broadcaster) wakeAll() {
	b.mu.Lock()
	for _, s := range b.senders {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
}

// stop stops every sender and waits for them.
func (b *broadcaster) stop() {
	b.mu.Lock()
	b.closed = true
	for ip, s := range b.senders {
		s.cancel()
		delete(b.senders, ip)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// lagCollector reports, at scrape time, how many events each peer has not
// acknowledged, so a peer that only falls behind is visible without a
// metric update per event.
type lagCollector struct{ b *broadcaster }

var (
	peerLagDesc   = prometheus.NewDesc("sser_peer_lag", "Events of this replica's outbox a peer has not acknowledged.", []string{"peer"}, nil)
	peerQueueDesc = prometheus.NewDesc("sser_peer_queue_length", "Events waiting to be sent to a peer (the same as sser_peer_lag).", []string{"peer"}, nil)
	outboxDesc    = prometheus.NewDesc("sser_outbox_length", "Events held in this replica's outbox.", nil, nil)
)

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerLagDesc
	ch <- peerQueueDesc
	ch <- outboxDesc
}

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	type peer struct{ ip, label string }
	c.b.mu.Lock()
	peers := make([]peer, 0, len(c.b.senders))
	for ip, s := range c.b.senders {
		peers = append(peers, peer{ip, s.series().label})
	}
	c.b.mu.Unlock()
	for _, p := range peers {
		lag := float64(c.b.out.lag(p.ip))
		ch <- prometheus.MustNewConstMetric(peerLagDesc, prometheus.GaugeValue, lag, p.label)
		ch <- prometheus.MustNewConstMetric(peerQueueDesc, prometheus.GaugeValue, lag, p.label)
	}
	ch <- prometheus.MustNewConstMetric(outboxDesc, prometheus.GaugeValue, float64(c.b.out.length()))
}

// peerSender delivers this replica's events to one peer in seq order. It
// keeps one delivery stream open to the peer (peerstream.go) and pipelines
// batches on it, each as soon as it is published: a sent cursor runs ahead
// of the acknowledged one by at most a window of two batches. A peer that
// does not answer in time gets smaller batches and more time; one that
// fails is retried with jittered backoff, never in a tight loop, from what
// it acknowledged. A peer that predates streaming gets one POST per batch
// for a while.
type peerSender struct {
	b      *broadcaster
	ip     string
	log    logr.Logger
	cancel context.CancelFunc
	wake   chan struct{}

	// ser are its metric series, under the peer's current label.
	ser atomic.Pointer[peerSeries]
	// down is set while the peer counts as down (see peerDownAfter);
	// downSince is when it last turned down (unix nanoseconds), and
	// lastErr the last failed delivery, for the status page.
	down      atomic.Bool
	downSince atomic.Int64
	lastErr   atomic.Pointer[peerFailure]
}

// peerFailure is a sender's last failed delivery.
type peerFailure struct {
	msg string
	at  time.Time
}

// peerDownAfter is how many failed deliveries in a row make a peer count
// as down: one failure is often a connection the peer just closed.
const peerDownAfter = 2

func newPeerSender(b *broadcaster, ip string, cancel context.CancelFunc) *peerSender {
	return &peerSender{b: b, ip: ip, log: b.log.WithValues("peer", ip), wake: make(chan struct{}, 1), cancel: cancel}
}

func (s *peerSender) series() *peerSeries { return s.ser.Load() }

const (
	minPeerBatch = 16
	// defaultStreamRetry is how long a sender posts one batch per request
	// to a peer that refused a stream before it tries a stream again.
	defaultStreamRetry = 5 * time.Minute
)

// sendState is how a sender treats its peer now.
type sendState struct {
	batch    int
	timeout  time.Duration
	backoff  time.Duration
	failures int
}

func (s *peerSender) run(ctx context.Context) {
	opts := s.b.opts
	st := &sendState{batch: opts.PeerBatch, timeout: opts.PeerTimeout, backoff: opts.PeerBackoffMin}
	var postUntil time.Time // one POST per batch until then
	for ctx.Err() == nil {
		var err error
		if time.Now().Before(postUntil) {
			err = s.post(ctx, st, postUntil)
		} else {
			err = s.stream(ctx, st)
			if errors.Is(err, errStreamUnsupported) {
				s.log.Info("peer does not accept streamed deliveries: one POST per batch for now",
					"retryStreamAfter", s.b.streamRetry.String(), "error", err.Error())
				postUntil = time.Now().Add(s.b.streamRetry)
				continue
			}
		}
		if err == nil || ctx.Err() != nil {
			continue
		}
		if !s.failed(ctx, st, err) {
			return
		}
	}
}

// inflight is a batch line sent and not answered yet.
type inflight struct {
	last uint64 // seq of its last event
	n    int
	sent time.Time
}

// stream opens a delivery stream and sends on it until it fails; it
// returns why (ctx's error once ctx ends).
func (s *peerSender) stream(ctx context.Context, st *sendState) error {
	s.series().requests.Inc()
	ps, err := s.b.peers.openStream(ctx, s.ip, st.timeout)
	if err != nil {
		return err
	}
	defer ps.close()
	if s.down.Load() && s.b.out.lag(s.ip) == 0 {
		// The peer took the stream and nothing waits for it: no delivery
		// can fail, so it is up. (With events waiting, their
		// acknowledgement says so.) Otherwise a replica that publishes
		// nothing would hold a peer that was slow to start down forever.
		s.reachable(st)
	}
	var (
		flight   []inflight
		inFlight int // events in flight
		sent     = s.b.out.acked(s.ip)
		now      = time.Now()
		// lastWrite is when a line last went out; askedAt when the peer
		// was last asked for the answers it holds; lastAnswer when one
		// last came.
		lastWrite, askedAt, lastAnswer = now, now, now
		// After a failed write the peer may still say why (a refusal
		// line): its answers are read until writeEnd.
		writeErr error
		writeEnd time.Time
	)
	// The peer is asked for the answers it holds (a keepalive line, after
	// a batch line when there is one) when half the window is in flight,
	// or a quarter of the outbox, so neither fills while answers wait;
	// and when the oldest line has waited askAfter, so the cursor moves
	// about once a second on a quiet stream instead of once per line.
	askAt := max(1, min(st.batch, s.b.opts.OutboxSize/4))
	answers := ps.answers()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var armed time.Time
	for {
		for writeErr == nil && inFlight < 2*st.batch {
			events, heldFrom := s.b.out.nextAfter(s.ip, sent, min(st.batch, 2*st.batch-inFlight))
			if len(events) == 0 {
				break
			}
			now = time.Now()
			ask := !askedAt.After(lastAnswer) &&
				(inFlight+len(events) >= askAt || len(flight) > 0 && now.Sub(flight[0].sent) >= askAfter)
			if err := ps.send(events, heldFrom, ask); err != nil {
				writeErr, writeEnd = err, time.Now().Add(st.timeout)
				break
			}
			last := events[len(events)-1].Seq
			flight = append(flight, inflight{last: last, n: len(events), sent: now})
			inFlight += len(events)
			sent, lastWrite = last, now
			if ask {
				askedAt = now
			}
		}
		// Wake for the next thing due: a late answer, a keepalive. The
		// timer is moved only earlier; firing early just looks again.
		now = time.Now()
		next := lastWrite.Add(s.b.keepalive)
		switch {
		case writeErr != nil:
			next = writeEnd
		case len(flight) > 0:
			next = minTime(next, answerDue(flight[0], askedAt, lastAnswer, st.timeout))
			if !askedAt.After(lastAnswer) {
				// No line came to carry the question: ask alone.
				next = minTime(next, flight[0].sent.Add(askAfter*3/2))
			}
		}
		if armed.IsZero() || next.Before(armed) {
			timer.Reset(next.Sub(now))
			armed = next
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		case a, ok := <-answers:
			switch {
			case !ok && writeErr != nil:
				return writeErr
			case !ok:
				return errStreamClosed
			case a.err != nil:
				return a.err
			case len(flight) == 0:
				return errors.New("sser: peer answered a batch it was not sent")
			}
			head := flight[0]
			flight = flight[1:]
			inFlight -= head.n
			lastAnswer = time.Now()
			s.acked(st, head)
			askAt = max(1, min(st.batch, s.b.opts.OutboxSize/4))
		case now = <-timer.C:
			armed = time.Time{}
			switch {
			case writeErr != nil:
				if !now.Before(writeEnd) {
					return writeErr
				}
			case len(flight) > 0 && !now.Before(answerDue(flight[0], askedAt, lastAnswer, st.timeout)):
				return timeoutError{fmt.Errorf("peer did not answer a batch within %s", st.timeout)}
			case !now.Before(lastWrite.Add(s.b.keepalive)),
				len(flight) > 0 && !askedAt.After(lastAnswer) && now.Sub(flight[0].sent) >= askAfter*3/2:
				if err := ps.keepalive(); err != nil {
					writeErr, writeEnd = err, now.Add(st.timeout)
				} else if lastWrite = now; len(flight) > 0 {
					askedAt = now
				}
			}
		}
	}
}

// askAfter is how long the oldest line in flight waits before the next
// line asks for the answers.
const askAfter = streamAnswerDelay / 2

// answerDue is when the answer to the oldest line in flight is late: the
// peer owes it streamAnswerDelay after the line, or at once when asked
// after it, and has said nothing for timeout since.
func answerDue(head inflight, askedAt, lastAnswer time.Time, timeout time.Duration) time.Time {
	owed := head.sent.Add(streamAnswerDelay)
	if !askedAt.Before(head.sent) && askedAt.Before(owed) {
		owed = askedAt
	}
	if lastAnswer.After(owed) {
		owed = lastAnswer
	}
	return owed.Add(timeout)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// post sends one batch in one request, for a peer that does not stream,
// or waits for events until until.
func (s *peerSender) post(ctx context.Context, st *sendState, until time.Time) error {
	events, heldFrom := s.b.out.next(s.ip, st.batch)
	if len(events) == 0 {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-t.C:
		}
		return nil
	}
	s.series().requests.Inc()
	start := time.Now()
	if err := s.b.peers.send(ctx, s.ip, events, heldFrom, st.timeout); err != nil {
		return err
	}
	s.acked(st, inflight{last: events[len(events)-1].Seq, n: len(events), sent: start})
	return nil
}

// acked moves the cursor past a batch the peer accepted.
func (s *peerSender) acked(st *sendState, b inflight) {
	opts := s.b.opts
	s.b.out.ack(s.ip, b.last)
	ser := s.series()
	ser.acks.Observe(time.Since(b.sent).Seconds())
	ser.sent.Add(float64(b.n))
	s.reachable(st)
	st.batch = min(2*st.batch, opts.PeerBatch)
	st.timeout = max(st.timeout*3/4, opts.PeerTimeout)
}

// reachable records a delivery attempt that succeeded: the peer is up.
func (s *peerSender) reachable(st *sendState) {
	ser := s.series()
	if s.down.Swap(false) {
		ser.up.Set(1)
		warn(s.log, "peer up again: deliveries to it succeed", "failedAttempts", st.failures, "unacknowledged", s.b.out.lag(s.ip))
	} else if st.failures > 0 {
		s.log.Info("peer reachable again", "failedAttempts", st.failures)
	}
	st.failures = 0
	st.backoff = s.b.opts.PeerBackoffMin
}

// failed counts a failed delivery, adapts to it and waits before the next
// attempt; false when ctx ended meanwhile.
func (s *peerSender) failed(ctx context.Context, st *sendState, err error) bool {
	opts := s.b.opts
	st.failures++
	ser := s.series()
	ser.errs.Inc()
	now := time.Now()
	s.lastErr.Store(&peerFailure{msg: err.Error(), at: now})
	var te timeoutError
	if errors.As(err, &te) {
		// A slow peer: ask less of it, and give it longer.
		st.batch = max(st.batch/4, minPeerBatch)
		st.timeout = min(2*st.timeout, 4*opts.PeerTimeout)
	}
	var perm permanentError
	if errors.As(err, &perm) {
		// The peer refuses these events (it does not see us as a peer
		// yet, say): they stay in the outbox; wait as long as allowed.
		st.backoff = opts.PeerBackoffMax
	}
	if st.failures == peerDownAfter && !s.down.Swap(true) {
		s.downSince.Store(now.UnixNano())
		ser.up.Set(0)
		warn(s.log, "peer down: deliveries to it fail; its events wait in the outbox", "attempts", st.failures,
			"unacknowledged", s.b.out.lag(s.ip), "error", err.Error())
	}
	if st.failures == 1 || st.failures%20 == 0 {
		s.log.Info("delivery to peer failed, retrying with backoff", "attempt", st.failures, "unacknowledged", s.b.out.lag(s.ip),
			"batch", st.batch, "timeout", st.timeout.String(), "error", err.Error())
	}
	// Full jitter keeps replicas that lost the same peer from retrying in step.
	t := time.NewTimer(st.backoff/2 + rand.N(st.backoff/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	st.backoff = min(2*st.backoff, opts.PeerBackoffMax)
	return true
}
