package sser

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// broadcaster keeps one sender per peer. A sender is a cursor over the
// outbox: it sends what the peer has not acknowledged, one POST at a time,
// so publishing never waits for a peer and a peer that was away gets what
// it missed in order, from the outbox, when it is back.
type broadcaster struct {
	log   logr.Logger
	m     *metrics
	peers peerClient
	out   *outbox
	self  string
	opts  *Options

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
	}
	m.registry.MustRegister(lagCollector{b})
	return b
}

// setPeers starts senders for new peers and stops those for peers that left.
func (b *broadcaster) setPeers(ctx context.Context, ips []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.set = append([]string(nil), ips...)
	b.m.peers.Set(float64(len(ips)))
	want := make(map[string]bool, len(ips))
	for _, ip := range ips {
		if ip == b.self {
			continue
		}
		want[ip] = true
		if _, ok := b.senders[ip]; ok {
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		s := &peerSender{b: b, ip: ip, log: b.log.WithValues("peer", ip), wake: make(chan struct{}, 1), cancel: cancel}
		b.out.addPeer(ip)
		b.senders[ip] = s
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			s.run(sctx)
		}()
		b.log.Info("peer joined", "peer", ip)
	}
	for ip, s := range b.senders {
		if !want[ip] {
			s.cancel()
			delete(b.senders, ip)
			b.log.Info("peer left", "peer", ip, "unacknowledged", b.out.lag(ip))
			b.out.removePeer(ip)
			b.m.forgetPeer(ip)
		}
	}
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
	c.b.mu.Lock()
	peers := make([]string, 0, len(c.b.senders))
	for ip := range c.b.senders {
		peers = append(peers, ip)
	}
	c.b.mu.Unlock()
	for _, ip := range peers {
		lag := float64(c.b.out.lag(ip))
		ch <- prometheus.MustNewConstMetric(peerLagDesc, prometheus.GaugeValue, lag, ip)
		ch <- prometheus.MustNewConstMetric(peerQueueDesc, prometheus.GaugeValue, lag, ip)
	}
	ch <- prometheus.MustNewConstMetric(outboxDesc, prometheus.GaugeValue, float64(c.b.out.length()))
}

// peerSender delivers this replica's events to one peer in seq order. A
// peer that times out gets smaller batches and more time per request; one
// that fails is retried with jittered backoff, never in a tight loop.
type peerSender struct {
	b      *broadcaster
	ip     string
	log    logr.Logger
	cancel context.CancelFunc
	wake   chan struct{}
}

const minPeerBatch = 16

func (s *peerSender) run(ctx context.Context) {
	opts := s.b.opts
	batch := opts.PeerBatch
	timeout := opts.PeerTimeout
	backoff := opts.PeerBackoffMin
	failures := 0
	for {
		events, heldFrom := s.b.out.next(s.ip, batch)
		if len(events) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		start := time.Now()
		err := s.b.peers.send(ctx, s.ip, events, heldFrom, timeout)
		s.b.m.peerPostDuration.WithLabelValues(s.ip).Observe(time.Since(start).Seconds())
		if err == nil {
			s.b.out.ack(s.ip, events[len(events)-1].Seq)
			s.b.m.peerEventsSent.WithLabelValues(s.ip).Add(float64(len(events)))
			if failures > 0 {
				s.log.Info("peer reachable again", "failedAttempts", failures)
			}
			failures = 0
			backoff = opts.PeerBackoffMin
			batch = min(2*batch, opts.PeerBatch)
			timeout = max(timeout*3/4, opts.PeerTimeout)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		s.b.m.peerPostErrors.WithLabelValues(s.ip).Inc()
		var te timeoutError
		if errors.As(err, &te) {
			// A slow peer: ask less of it, and give it longer.
			batch = max(batch/4, minPeerBatch)
			timeout = min(2*timeout, 4*opts.PeerTimeout)
		}
		var perm permanentError
		if errors.As(err, &perm) {
			// The peer refuses these events (it does not see us as a peer
			// yet, say): they stay in the outbox; wait as long as allowed.
			backoff = opts.PeerBackoffMax
		}
		if failures == 1 || failures%20 == 0 {
			s.log.Info("peer POST failed, retrying with backoff", "attempt", failures, "events", len(events),
				"batch", batch, "timeout", timeout.String(), "error", err.Error())
		}
		// Full jitter keeps replicas that lost the same peer from retrying in step.
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, opts.PeerBackoffMax)
	}
}
