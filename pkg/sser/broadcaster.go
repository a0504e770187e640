package sser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// PeerHeader carries the sending replica's own IP on peer requests, so the
// receiver knows where an origin's history can be fetched from.
const PeerHeader = "X-Sser-Peer"

// broadcaster keeps one sender per peer and hands each of them every event
// published on this replica. Enqueueing never blocks: each sender has a
// bounded queue of its own.
type broadcaster struct {
	log    logr.Logger
	m      *metrics
	client *http.Client
	self   string
	port   int
	opts   *Options

	mu      sync.Mutex
	senders map[string]*peerSender
	peers   []string
	wg      sync.WaitGroup
	closed  bool
}

func newBroadcaster(log logr.Logger, m *metrics, opts *Options, self string, port int) *broadcaster {
	tr := &http.Transport{
		Proxy:               nil, // peers are pod IPs: never through a proxy
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	b := &broadcaster{
		log:     log,
		m:       m,
		client:  &http.Client{Transport: tr},
		self:    self,
		port:    port,
		opts:    opts,
		senders: make(map[string]*peerSender),
	}
	m.registry.MustRegister(queueCollector{b})
	return b
}

// setPeers starts senders for new peers and stops those for peers that left.
func (b *broadcaster) setPeers(ctx context.Context, ips []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.peers = append([]string(nil), ips...)
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
		s := &peerSender{
			b:      b,
			ip:     ip,
			url:    "http://" + net.JoinHostPort(ip, strconv.Itoa(b.port)) + PeerEndpointURLPath,
			log:    b.log.WithValues("peer", ip),
			wake:   make(chan struct{}, 1),
			cancel: cancel,
		}
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
			b.m.forgetPeer(ip)
			b.log.Info("peer left", "peer", ip, "unsent", s.queued())
		}
	}
}

// currentPeers is the last peer set, this replica included.
func (b *broadcaster) currentPeers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.peers...)
}

// enqueue hands ev to every peer's sender.
func (b *broadcaster) enqueue(ev Event) {
	b.mu.Lock()
	for _, s := range b.senders {
		s.enqueue(ev)
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
	b.client.CloseIdleConnections()
}

// queueCollector reports each peer's queue depth at scrape time, so a peer
// whose queue only grows is visible without a metric update per event.
type queueCollector struct{ b *broadcaster }

var peerQueueDesc = prometheus.NewDesc("sser_peer_queue_length", "Events waiting to be sent to a peer.", []string{"peer"}, nil)

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- peerQueueDesc }

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	c.b.mu.Lock()
	senders := make([]*peerSender, 0, len(c.b.senders))
	for _, s := range c.b.senders {
		senders = append(senders, s)
	}
	c.b.mu.Unlock()
	for _, s := range senders {
		ch <- prometheus.MustNewConstMetric(peerQueueDesc, prometheus.GaugeValue, float64(s.queued()), s.ip)
	}
}

// peerSender delivers this replica's events to one peer, in order: one POST
// at a time carrying everything queued (up to a batch limit), retried with
// backoff until it succeeds or the peer leaves the set.
type peerSender struct {
	b      *broadcaster
	ip     string
	url    string
	log    logr.Logger
	cancel context.CancelFunc
	wake   chan struct{}

	mu          sync.Mutex
	queue       []Event
	inflight    int // events of the batch being sent
	dropped     int // since the last log line
	lastDropLog time.Time
}

func (s *peerSender) enqueue(ev Event) {
	s.mu.Lock()
	if len(s.queue) >= s.b.opts.PeerQueue {
		// Drop the oldest: the newest events matter most to live
		// subscribers, and the peer repairs the gap from our history.
		s.queue[0] = Event{}
		s.queue = s.queue[1:]
		s.dropped++
		s.b.m.peerQueueDropped.WithLabelValues(s.ip).Inc()
		if now := time.Now(); now.Sub(s.lastDropLog) > time.Second {
			s.log.Info("peer queue full, dropping oldest events", "dropped", s.dropped, "queue", s.b.opts.PeerQueue)
			s.dropped, s.lastDropLog = 0, now
		}
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// queued counts the events not yet delivered, the batch in flight included.
func (s *peerSender) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) + s.inflight
}

func (s *peerSender) take() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.queue), s.b.opts.PeerBatch)
	if n == 0 {
		return nil
	}
	batch := make([]Event, n)
	s.inflight = n
	copy(batch, s.queue[:n])
	clear(s.queue[:n])
	s.queue = s.queue[n:]
	if len(s.queue) == 0 {
		s.queue = nil
	}
	return batch
}

func (s *peerSender) run(ctx context.Context) {
	for {
		batch := s.take()
		if batch == nil {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		ok := s.deliver(ctx, batch)
		s.mu.Lock()
		s.inflight = 0
		s.mu.Unlock()
		if !ok {
			return
		}
	}
}

// deliver POSTs batch until it is accepted; false when ctx ended first.
func (s *peerSender) deliver(ctx context.Context, batch []Event) bool {
	body, err := json.Marshal(batch)
	if err != nil {
		s.log.Error(err, "cannot encode batch; dropping it", "events", len(batch))
		return true
	}
	backoff := s.b.opts.PeerBackoffMin
	for attempt := 1; ; attempt++ {
		err := s.post(ctx, body)
		if err == nil {
			s.b.m.peerEventsSent.WithLabelValues(s.ip).Add(float64(len(batch)))
			if attempt > 1 {
				s.log.Info("peer reachable again", "attempts", attempt)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if perm, ok := err.(permanentError); ok {
			s.b.m.peerQueueDropped.WithLabelValues(s.ip).Add(float64(len(batch)))
			s.log.Error(perm, "peer rejected a batch; dropping it", "events", len(batch))
			return true
		}
		s.b.m.peerPostErrors.WithLabelValues(s.ip).Inc()
		if attempt == 1 || attempt%20 == 0 {
			s.log.Info("peer POST failed, retrying with backoff", "attempt", attempt, "events", len(batch), "error", err.Error())
		}
		// Full jitter keeps replicas that lost the same peer from retrying in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(2*backoff, s.b.opts.PeerBackoffMax)
	}
}

type permanentError struct{ error }

func (s *peerSender) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.b.opts.PeerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	if t := s.b.opts.InternalToken; t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	if s.b.self != "" {
		req.Header.Set(PeerHeader, s.b.self)
	}
	start := time.Now()
	resp, err := s.b.client.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	s.b.m.peerPostDuration.WithLabelValues(s.ip).Observe(time.Since(start).Seconds())
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode/100 == 5:
		return fmt.Errorf("peer answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	default:
		return permanentError{fmt.Errorf("peer answered %s: %s", resp.Status, bytes.TrimSpace(msg))}
	}
}
