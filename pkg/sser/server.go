package sser

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/sser-dev/sser/pkg/peerfinder"
)

// Server is the original API: start it, mount its SSE handler, send events.
type Server interface {
	// Start discovers peers and starts serving the internal endpoints. It
	// returns once the server is running; everything stops when ctx ends.
	Start(ctx context.Context) error
	// ClientConnectionHandler serves SSE subscriptions until ctx ends.
	ClientConnectionHandler(ctx context.Context) http.HandlerFunc
	// Send publishes msg on stream to every subscriber on every replica.
	Send(ctx context.Context, stream, msg string) error
}

// ServerImpl is the Server. Build it with New or NewWithOptions.
type ServerImpl struct {
	opts   Options
	log    logr.Logger
	m      *metrics
	hub    *hub
	origin string

	out   *outbox
	peers peerClient
	book  *originBook
	rep   *repairer
	idem  *idempotency

	started   atomic.Bool
	stopped   atomic.Bool
	ready     atomic.Bool
	draining  atomic.Bool
	warm      atomic.Bool   // warm-up finished (or not needed)
	warmCh    chan struct{} // closed with warm
	bc        *broadcaster
	listener  net.Listener
	done      chan struct{}
	handler   http.Handler
	err       error         // the first failure of any part, once done is closed
	snapshots chan struct{} // bounds the snapshot pages served at once
	// peerStreams are the delivery streams peers hold open here; answers
	// on them are held for up to answerDelay (streamAnswerDelay).
	peerStreams *peerStreams
	answerDelay atomic.Int64 // nanoseconds
	fail        context.CancelCauseFunc
	conns       *connLimits
	failures    *failureThrottle
	pubRate     *keyedBuckets
	memory      memoryGuard
	writers     *connWriters
	status      *statusTracker

	// Background work (warm-up) that must end before Done.
	bgMu      sync.Mutex
	bg        sync.WaitGroup
	bgStopped bool
}

var _ Server = (*ServerImpl)(nil)

// New is the original constructor: a server whose internal endpoints listen on
// internalPort (also the port of every peer) and whose peers come from peerFinder.
func New(internalPort int, peerFinder PeerFinder) (*ServerImpl, error) {
	return NewWithOptions(Options{InternalAddr: ":" + strconv.Itoa(internalPort), PeerFinder: peerFinder})
}

// NewWithOptions builds a server from opts; see Options for the defaults.
func NewWithOptions(opts Options) (*ServerImpl, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("sser: invalid options: %w", err)
	}
	if opts.PeerPort == 0 && opts.InternalAddr != "" {
		_, p, err := net.SplitHostPort(opts.InternalAddr)
		if err != nil {
			return nil, fmt.Errorf("sser: invalid InternalAddr %q: %w", opts.InternalAddr, err)
		}
		opts.PeerPort, err = strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("sser: invalid port in InternalAddr %q: %w", opts.InternalAddr, err)
		}
	}
	if opts.PodIP == "" && opts.InternalAddr != "" {
		// Bound to one address: that address is this replica in the peer set.
		if h, _, err := net.SplitHostPort(opts.InternalAddr); err == nil {
			if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
				opts.PodIP = ip.String()
			}
		}
	}
	if l, ok := opts.PeerFinder.(peerfinder.Lone); ok && l.Lone() {
		// A replica alone: its peer set is its own address, never another.
		if opts.PodIP == "" {
			opts.PodIP = peerfinder.LocalhostIP
		}
		pf, err := peerfinder.NewPeerFinderStatic([]string{opts.PodIP})
		if err != nil {
			return nil, fmt.Errorf("sser: %w", err)
		}
		opts.PeerFinder = pf
	}
	s := &ServerImpl{
		opts:      opts,
		log:       opts.Logger,
		m:         newMetrics(opts.Registry),
		origin:    newOrigin(),
		done:      make(chan struct{}),
		warmCh:    make(chan struct{}),
		book:      newOriginBook(opts.MaxOriginsPerPeer),
		snapshots: make(chan struct{}, 2),

		peerStreams: newPeerStreams(maxPeerStreamsPerIP),
	}
	s.answerDelay.Store(int64(streamAnswerDelay))
	s.hub = newHub(s.log.WithName("hub"), s.m, opts.HistorySize, opts.HistoryAge)
	s.hub.self = s.origin
	s.hub.gzip = opts.Compression == CompressionGzip
	s.hub.beat = newBeatTiming(opts.Heartbeat)
	s.writers = newConnWriters(s)
	s.hub.opts.maxSeqGap = opts.MaxSeqGap
	s.hub.opts.maxReplayEvents, s.hub.opts.maxReplayBytes = opts.MaxReplayEvents, opts.MaxReplayBytes
	s.hub.hist.maxStreams, s.hub.hist.maxBytes, s.hub.hist.maxStreamBytes = opts.MaxHistoryStreams, opts.MaxHistoryBytes, opts.MaxStreamHistoryBytes
	s.m.registry.MustRegister(historyCollector{s.hub})
	s.out = newOutbox(opts.OutboxSize, opts.OutboxBytes, opts.PeerCutoff)
	s.peers = newHTTPPeers(opts.PodIP, opts.PeerPort, opts.PeerToken, opts.PeerTimeout)
	s.bc = newBroadcaster(s.log.WithName("peers"), s.m, &s.opts, opts.PodIP, s.peers, s.out)
	s.rep = newRepairer(s)
	s.hub.repair = s.rep.q.add
	s.idem = newIdempotency(opts.IdempotencyWindow)
	s.conns = newConnLimits(&s.opts)
	s.failures = newFailureThrottle()
	if opts.PublishRate > 0 {
		s.pubRate = newKeyedBuckets(opts.PublishRate, max(opts.PublishRate, 1))
	}
	if opts.MemoryWatermark > 0 {
		s.memory.watermark = uint64(opts.MemoryWatermark)
	}
	s.status = newStatusTracker(s, time.Now())
	s.handler = s.internalRouter()
	return s, nil
}

// newOrigin returns a random id for this process incarnation: 12 base-36
// characters (62 bits), so a restarted container never reuses one.
func newOrigin() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// Origin is this process incarnation's origin id.
func (s *ServerImpl) Origin() string { return s.origin }

// Start discovers the peers, starts the senders and, when InternalAddr is
// set, listens on it. It returns once serving; the server stops when ctx
// ends, and Done is closed when it has.
func (s *ServerImpl) Start(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("sser: Start called twice")
	}
	if s.opts.InternalAddr != "" {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.opts.InternalAddr)
		if err != nil {
			return fmt.Errorf("sser: listen on internal address: %w", err)
		}
		s.listener = ln
	}
	// Any part that fails stops the others: run ends then, and Run
	// returns the failure.
	runCtx, fail := context.WithCancelCause(ctx)
	s.fail = fail
	ctx = runCtx
	s.hub.startWarming()
	pfCtx, pfCancel := context.WithCancel(ctx)
	peers, updates, err := startPeers(pfCtx, s.opts.PeerFinder)
	if err != nil {
		pfCancel()
		fail(err)
		if s.listener != nil {
			_ = s.listener.Close()
		}
		return fmt.Errorf("sser: start peer finder: %w", err)
	}
	s.bc.setNamedPeers(ctx, peers)
	s.log.Info("peer set known", "peers", peers, "self", s.opts.PodIP, "origin", s.origin)
	s.ready.Store(true)
	if len(s.otherPeers()) == 0 || s.opts.HistorySize == 0 || s.opts.WarmUpTimeout < 0 {
		_ = s.hub.finishWarming(nil)
		s.setWarm()
	} else {
		s.background(func() { s.warmUp(ctx) })
	}

	var wg sync.WaitGroup
	goPart := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	var srv *http.Server
	if s.listener != nil {
		srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: min(10*time.Second, s.opts.InternalReadTimeout),
			ReadTimeout: s.opts.InternalReadTimeout, IdleTimeout: 2 * time.Minute,
			BaseContext: func(net.Listener) context.Context { return ctx }}
		goPart(func() {
			if err := srv.Serve(s.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error(err, "internal server stopped")
				fail(fmt.Errorf("sser: internal server: %w", err))
			}
		})
	}
	if s.opts.AntiEntropyInterval > 0 && s.opts.HistorySize > 0 {
		goPart(func() { s.antiEntropy(ctx) })
	}
	goPart(func() { s.rep.run(ctx) })
	goPart(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case peers, ok := <-updates:
				if !ok {
					return
				}
				s.log.V(1).Info("peer set changed", "peers", peers)
				s.bc.setNamedPeers(ctx, peers)
			}
		}
	})
	goPart(func() {
		every(ctx, min(max(s.opts.HistoryAge/10, time.Second), 30*time.Second), func() {
			for _, origin := range s.hub.sweep() {
				s.book.forget(origin)
			}
		})
	})
	goPart(func() { every(ctx, min(time.Second, s.opts.LivenessStall/4), s.hub.alive) })
	goPart(func() { s.status.run(ctx) })
	if s.memory.watermark > 0 {
		goPart(func() { every(ctx, 100*time.Millisecond, s.memory.check) })
	}
	go func() {
		<-ctx.Done()
		s.stopped.Store(true)
		s.ready.Store(false)
		// Shutdown waits for handlers but does not end them: the delivery
		// streams end here (their senders reopen them elsewhere).
		s.peerStreams.closeAll()
		if srv != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = srv.Shutdown(sctx)
			cancel()
		}
		pfCancel()
		s.bc.stop()
		s.bgMu.Lock()
		s.bgStopped = true
		s.bgMu.Unlock()
		s.bg.Wait()
		s.hub.shutdown()
		// The hub closed every subscriber; hijacked connections end once
		// their writers have written the terminating chunk (bounded by
		// shutdownGrace) and closed them.
		s.writers.stop()
		wg.Wait()
		s.peers.(*httpPeers).close()
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
			s.err = cause
		}
		close(s.done)
	}()
	return nil
}

// Run starts the server and blocks until ctx ends and every part has
// stopped. It returns the first failure of any part (the internal listener,
// say), which also stops the others; nil when ctx ended.
func (s *ServerImpl) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-s.done
	return s.err
}

// Err is the failure that stopped the server, once Done is closed.
func (s *ServerImpl) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Done is closed once the server has stopped after its context ended.
func (s *ServerImpl) Done() <-chan struct{} { return s.done }

// InternalAddr is the address the internal listener is bound to, or "".
func (s *ServerImpl) InternalAddr() string {
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// Ready reports whether the replica should receive traffic: the peer set is
// known, history is warmed up from a peer, and it is not draining.
func (s *ServerImpl) Ready() bool { return s.ready.Load() && s.warm.Load() && !s.draining.Load() }

// Peers is the current peer set, this replica included.
func (s *ServerImpl) Peers() []string { return s.bc.currentPeers() }

// Send publishes msg on stream to every subscriber of every replica. It
// never waits for a peer: each has its own queue.
func (s *ServerImpl) Send(ctx context.Context, stream, msg string) error {
	return s.Publish(ctx, Event{Stream: stream, Msg: msg})
}

// Publish is Send with every field of Event (the event type, say). Origin
// and Seq are assigned here. All events are checked before any is sent.
// While a peer lags by the whole outbox it fails with ErrBackPressure and
// publishes nothing.
func (s *ServerImpl) Publish(ctx context.Context, events ...Event) error {
	_, err := s.publish(ctx, events)
	return err
}

// Published says which seqs a publish was given: events got first..last
// of origin, in order.
type Published struct {
	Accepted int    `json:"accepted"`
	Origin   string `json:"origin"`
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
}

func (s *ServerImpl) publish(ctx context.Context, events []Event) (Published, error) {
	at := time.Now().UnixMicro()
	for i := range events {
		events[i].Origin, events[i].Seq, events[i].At = "", 0, at
		if err := events[i].Validate(); err != nil {
			return Published{}, err
		}
		if strings.HasPrefix(events[i].Event, reservedEventPrefix) {
			return Published{}, fmt.Errorf("%w: %q", ErrReservedEventType, events[i].Event)
		}
	}
	if err := ctx.Err(); err != nil {
		return Published{}, err
	}
	if s.stopped.Load() {
		return Published{}, ErrClosed
	}
	if !s.started.Load() {
		return Published{}, ErrNotStarted
	}
	var cutoffs []cutoffNote
	err := s.hub.applyOwn(events, ctx.Err, func() error {
		var err error
		cutoffs, err = s.out.add(s.origin, events)
		return err
	})
	if err != nil && !errors.Is(err, ErrBackPressure) {
		return Published{}, err
	}
	for _, c := range cutoffs {
		s.bc.cutOff(c.peer)
		s.log.Info("peer cut off: it held publishers back longer than the peer cut-off; it skips what the outbox no longer holds",
			"peer", c.peer, "lag", c.lag, "cutoff", s.opts.PeerCutoff.String())
	}
	if err != nil {
		s.m.backPressure.Inc()
		return Published{}, err
	}
	s.bc.wakeAll()
	s.m.eventsPublished.Add(float64(len(events)))
	return Published{Accepted: len(events), Origin: s.origin, First: events[0].Seq, Last: events[len(events)-1].Seq}, nil
}

// reservedEventPrefix starts the event types of the server's own notices.
const reservedEventPrefix = "sser-"

// Deliver hands events to this replica's subscribers only, as the peer
// endpoint does.
func (s *ServerImpl) Deliver(events ...Event) error {
	for i := range events {
		if err := events[i].Validate(); err != nil {
			return err
		}
	}
	s.hub.apply(events, "peer")
	return nil
}

// Drain prepares the replica to stop: readiness fails at once, and the
// subscribers are closed at random moments spread over window (also any
// that connect meanwhile), so they reconnect elsewhere without a herd. It
// returns when window has passed or ctx ends;
// the server keeps receiving and sending events throughout.
func (s *ServerImpl) Drain(ctx context.Context, window time.Duration) {
	s.draining.Store(true)
	s.log.Info("draining", "window", window.String(), "subscribers", s.hub.subscriberCount())
	s.hub.drain(window)
	t := time.NewTimer(window)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	s.log.Info("drain window over", "subscribers", s.hub.subscriberCount())
}

func (s *ServerImpl) setWarm() {
	if s.warm.CompareAndSwap(false, true) {
		close(s.warmCh)
	}
}

// background runs fn in a goroutine that stopping the server waits for;
// false (fn not run) once the server is stopping.
func (s *ServerImpl) background(fn func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.bgStopped {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		fn()
	}()
	return true
}

// otherPeers is the current peer set without this replica.
func (s *ServerImpl) otherPeers() []string {
	peers := s.bc.currentPeers()
	out := peers[:0]
	for _, p := range peers {
		if p != s.opts.PodIP {
			out = append(out, p)
		}
	}
	return out
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
