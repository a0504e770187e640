package sser

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// An HTTP/1.1 subscription is hijacked once its answer is known: the
// handler writes the status line and headers itself (chunked, as net/http
// would), hands the connection to the server's writers and returns. An
// idle connection then holds no goroutine, no bufio buffers and no timer:
// only its subscriber, its socket and a place in the hub's clock (see
// clock.go), which runs heartbeats, maximum connection time, credential
// expiry and drain closes for all of them. When frames are queued, push
// gives the connection to a writer from a small pool (or a new goroutine
// when none is idle, so slow clients never starve the others); the writer
// takes everything queued, writes it as one chunk with one write, loops
// while more was queued meanwhile, and lets go of the connection.
//
// A client that goes away is seen by the close watcher (epoll on Linux,
// one goroutine for all connections) or by the next failed write; its
// writer then unsubscribes it, closes the socket and releases its
// connection slot.

// hijacked is a hijacked connection's state, guarded by its subscriber's mu.
type hijacked struct {
	conn    net.Conn
	pool    *connWriters
	release func() // its connection-limit slot

	running   bool  // a writer has the connection
	beat      bool  // a heartbeat is due
	gone      bool  // the client went away or a write failed
	ended     bool  // closed and released
	rushed    bool  // the server is stopping: a short write deadline, not moved again
	lastWrite int64 // monoNow of the last write
	deadline  int64 // the write deadline set on conn, in monoNow
	token     uint64
}

// shutdownGrace bounds the last write to each connection when the server
// stops: the terminating chunk to a client that does not read.
const shutdownGrace = time.Second

// hurry shortens the write deadline: the server is stopping.
func (hc *hijacked) hurry() {
	if hc.rushed {
		return
	}
	hc.rushed = true
	hc.deadline = monoNow() + int64(shutdownGrace)
	_ = hc.conn.SetWriteDeadline(time.Now().Add(shutdownGrace))
}

// setDeadline moves the write deadline only when less than half the write
// timeout is left, so a busy connection does not reset a timer on every
// write: each batch gets between half and all of the timeout.
func (hc *hijacked) setDeadline(now int64, timeout time.Duration) {
	if hc.rushed || hc.deadline-now >= int64(timeout/2) {
		return
	}
	hc.deadline = now + int64(timeout)
	_ = hc.conn.SetWriteDeadline(time.Now().Add(timeout))
}

// connWriters are a server's hijacked connections: the writer pool, the
// close watcher, the handler groups, and the count that stopping waits for.
type connWriters struct {
	s *ServerImpl
	// idle hands a connection to a parked writer.
	idle    chan *subscriber
	nIdle   atomic.Int32
	maxIdle int32

	mu       sync.Mutex
	open     int
	stopping bool
	drained  chan struct{}
	watch    *closeWatcher
	watchErr error
	groups   map[context.Context]*connGroup
}

// defaultMaxIdleWriters is how many writers wait for work when there is
// none; past it a writer whose connection is written exits. Handing a
// connection to a parked writer and starting a goroutine cost the same
// here (0.65-0.85 µs each, 1,000 at a time on 2 cores); parked writers
// keep their grown stacks (a TLS write needs more), and 64 of them are
// 0.5 MiB at most.
//
// A goroutine for each connection with something to write, rather than a
// few writers draining a queue: with GOMAXPROCS writers that never wait
// (a non-blocking write, the rest handed to a goroutine of its own), 1,000
// subscribers at 200 events/s had a p50 latency 10-14% above the code
// before hijacking (this is 3.5% below it), though fan-out at full rate
// was about as fast. The cost is the runtime keeping the g of every
// goroutine that ever ran at once: a fan-out to 10,000 connections leaves
// about 90 bytes per connection of them.
const defaultMaxIdleWriters = 64

func newConnWriters(s *ServerImpl) *connWriters {
	return &connWriters{s: s, idle: make(chan *subscriber), maxIdle: defaultMaxIdleWriters,
		drained: make(chan struct{}), groups: make(map[context.Context]*connGroup)}
}

// run gives sub to a writer: a parked one, or a new goroutine. Never blocks.
func (p *connWriters) run(sub *subscriber) {
	select {
	case p.idle <- sub:
	default:
		go p.worker(sub)
	}
}

func (p *connWriters) worker(sub *subscriber) {
	for sub != nil {
		p.s.writeConn(sub, nil)
		if p.nIdle.Add(1) > p.maxIdle {
			p.nIdle.Add(-1)
			return
		}
		sub = <-p.idle // nil once stopped
		p.nIdle.Add(-1)
	}
}

// enter counts a connection about to be handed over; false once stopping.
func (p *connWriters) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return false
	}
	p.open++
	if p.watch == nil && p.watchErr == nil {
		p.watch, p.watchErr = newCloseWatcher(p.s.clientGone)
		if p.watchErr != nil {
			p.s.log.V(1).Info("no close watcher: clients that go away are found by the next write", "reason", p.watchErr.Error())
		}
	}
	return true
}

func (p *connWriters) leave(sub *subscriber) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.leaveGroupLocked(sub.group)
	if p.open--; p.open == 0 && p.stopping {
		close(p.drained)
	}
}

// stop waits until every hijacked connection has ended (the hub's
// shutdown closes them, each with a short last write), then lets the
// parked writers and the close watcher go.
func (p *connWriters) stop() {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return
	}
	p.stopping = true
	if p.open == 0 {
		close(p.drained)
	}
	p.mu.Unlock()
	<-p.drained
	close(p.idle)
	p.mu.Lock()
	w := p.watch
	p.mu.Unlock()
	w.close()
}

// openConns is the number of hijacked connections not yet ended.
func (p *connWriters) openConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// connGroup is the hijacked connections served through handlers made with
// one context: when it ends, they are closed (a connection no longer has a
// handler goroutine watching it). A group exists while it has connections,
// so handlers made per request with contexts of their own leave nothing
// behind.
type connGroup struct {
	ctx  context.Context
	stop func() bool
	n    int  // connections, guarded by connWriters.mu
	done bool // the context ended, guarded by hub.mu
}

// joinGroup counts one connection in ctx's group, making it when needed.
func (p *connWriters) joinGroup(ctx context.Context) *connGroup {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.groups[ctx]
	if g == nil {
		g = &connGroup{ctx: ctx}
		p.groups[ctx] = g
		g.stop = context.AfterFunc(ctx, func() { p.s.closeGroup(g) })
	}
	g.n++
	return g
}

func (p *connWriters) leaveGroup(g *connGroup) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.leaveGroupLocked(g)
}

func (p *connWriters) leaveGroupLocked(g *connGroup) {
	if g == nil {
		return
	}
	if g.n--; g.n == 0 {
		g.stop()
		if p.groups[g.ctx] == g {
			delete(p.groups, g.ctx)
		}
	}
}

// closeGroup ends the connections of a group whose context ended, as the
// server's stop does (they are not counted as closed by the server).
func (s *ServerImpl) closeGroup(g *connGroup) {
	s.hub.mu.Lock()
	g.done = true
	for sub := range s.hub.subs {
		if sub.group == g {
			s.hub.removeLocked(sub, reasonShutdown)
		}
	}
	s.hub.mu.Unlock()
	s.writers.mu.Lock()
	if s.writers.groups[g.ctx] == g {
		delete(s.writers.groups, g.ctx)
	}
	s.writers.mu.Unlock()
}

// canHijack reports whether the subscription on w can be hijacked: an
// HTTP/1.1 request whose ResponseWriter (or one it wraps) is an
// http.Hijacker, served by a handler whose context outlives the request.
// A context that comes from a request or its connection (it carries
// http.ServerContextKey) would end when the handler returns, which a
// hijacking handler does at once.
func (s *ServerImpl) canHijack(ctx context.Context, w http.ResponseWriter, r *http.Request) bool {
	if s.opts.DisableHijack || r.ProtoMajor != 1 || r.ProtoMinor < 1 || ctx.Value(http.ServerContextKey) != nil {
		return false
	}
	for {
		if _, ok := w.(http.Hijacker); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// serveHijacked takes the connection from net/http, writes the answer's
// head and what is queued, and leaves the rest to the writers. It returns
// false, having written nothing, when the connection cannot be hijacked;
// the caller then serves it from the handler's goroutine.
func (s *ServerImpl) serveHijacked(w http.ResponseWriter, sub *subscriber, release func(), expires time.Time) bool {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// What net/http read past the request (its bufio.Reader) is dropped:
	// a client that pipelines a request behind a stream that never ends
	// is never answered, hijacked or not.
	head := responseHead(w.Header())
	if !s.writers.enter() {
		// The server is stopping: its shutdown already closed sub.
		s.hub.unsubscribe(sub)
		_ = conn.Close()
		release()
		s.writers.leaveGroup(sub.group)
		return true
	}
	now := monoNow()
	hc := &hijacked{conn: conn, pool: s.writers, release: release, running: true, lastWrite: now}
	sub.mu.Lock()
	sub.hc = hc
	if sub.closed && sub.reason == reasonShutdown {
		hc.hurry()
	}
	sub.mu.Unlock()
	s.writers.watchConn(sub)
	s.scheduleConn(sub, now, expires)
	s.writeConn(sub, head)
	return true
}

// scheduleConn puts a hijacked connection handed over at now in the
// hub's clock: its heartbeats, its maximum connection time (jittered),
// and its credential's expiry.
func (s *ServerImpl) scheduleConn(sub *subscriber, now int64, expires time.Time) {
	beat := s.hub.beat
	s.hub.clock.set(sub, func(t *subTimers) {
		t.beatAt = beat.next(now)
		if d := s.opts.MaxConnectionTime; d > 0 {
			t.endAt = now + int64(d-rand.N(d/5+1))
		}
		if !expires.IsZero() {
			if at := now + int64(expiryDelay(expires)); t.endAt == 0 || at < t.endAt {
				t.endAt, t.expiry = at, true
			}
		}
	})
}

func (p *connWriters) watchConn(sub *subscriber) {
	p.mu.Lock()
	w := p.watch
	p.mu.Unlock()
	if tok := w.add(sub, sub.hc.conn); tok != 0 {
		sub.mu.Lock()
		sub.hc.token = tok
		sub.mu.Unlock()
	}
}

// clientGone is the close watcher's news: the client closed its side
// (a WebSocket's: it sent something, see wsReadable).
func (s *ServerImpl) clientGone(sub *subscriber) {
	if sub.ws != nil {
		s.wsReadable(sub)
		return
	}
	sub.mu.Lock()
	hc := sub.hc
	if hc == nil || hc.ended {
		sub.mu.Unlock()
		return
	}
	hc.gone = true
	run, _ := sub.wakeLocked()
	sub.mu.Unlock()
	sub.wakeUp(run, nil)
}

// writeConn is a hijacked connection's writer. It writes head (the status
// line and headers) when given, then everything queued, one chunk and one
// write per batch, until nothing is left, and lets go of the connection;
// the next push runs a writer again. It ends the connection when the
// subscriber was closed (after the frames a drain or maximum age lets the
// client have, and the terminating chunk) or the client is gone.
func (s *ServerImpl) writeConn(sub *subscriber, head []byte) {
	if sub.ws != nil {
		s.writeWS(sub)
		return
	}
	hc := sub.hc
	var z *gzStream // the connection's gzip stream when it is compressed
	if sub.gz != nil {
		z = &sub.gz.z
	}
	var written batch
	var wroteAt int64
	for {
		sub.mu.Lock()
		if written.frames != nil {
			clear(written.frames)
			clear(written.ents)
			sub.recycleLocked(written)
			written = batch{}
		}
		if wroteAt != 0 {
			hc.lastWrite = wroteAt
		}
		b := sub.takeLocked()
		q := b.frames
		beat := hc.beat
		hc.beat = false
		closed, reason, gone := sub.closed, sub.reason, hc.gone
		if len(q) == 0 && !beat && !closed && !gone && head == nil {
			hc.running = false
			sub.mu.Unlock()
			return
		}
		now := monoNow()
		if !gone {
			hc.setDeadline(now, s.opts.WriteTimeout)
		}
		sub.mu.Unlock()

		switch {
		case gone:
			s.endConn(sub)
			return
		case closed:
			var last [][]byte
			switch reason {
			case reasonDrain, reasonMaxAge:
				// Let the client have what was queued before it goes.
				last = q
			case reasonExpired:
				last = append(q, expiredFrame)
			}
			_ = hc.write(head, last, b.ents, z, true, s.m)
			s.endConn(sub)
			return
		}
		frames := q
		if len(frames) == 0 && beat {
			frames = [][]byte{heartbeatFrame}
		}
		err := hc.write(head, frames, b.ents, z, false, s.m)
		head = nil
		if len(q) > 0 {
			written = b
		}
		if err != nil {
			sub.mu.Lock()
			hc.gone = true
			sub.mu.Unlock()
			continue
		}
		wroteAt = monoNow()
		s.m.observeDelivery(b.born)
	}
}

// write writes head and frames, and with last the end of the body. On a
// compressed connection (z set) the frames go through z, ents their
// history entries.
func (hc *hijacked) write(head []byte, frames [][]byte, ents []*histEntry, z *gzStream, last bool, m *metrics) error {
	if z == nil {
		_, err := writeChunked(hc.conn, head, frames, last, m)
		return err
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	b := z.encodeBatch(bp, frames, ents, last)
	_, err := writeChunked(hc.conn, head, [][]byte{b}, last, m)
	return err
}

// endConn unsubscribes a hijacked connection (nothing when the server
// already has), closes its socket and releases its slot; once.
func (s *ServerImpl) endConn(sub *subscriber) {
	hc := sub.hc
	sub.mu.Lock()
	if hc.ended {
		sub.mu.Unlock()
		return
	}
	hc.ended = true
	sub.closed = true // pushes are dropped from now on
	sub.queue, sub.spare = nil, nil
	if q := sub.gz; q != nil {
		q.ents, q.spare = nil, nil
	}
	sub.mu.Unlock()
	s.hub.unsubscribe(sub)
	s.writers.forget(hc)
	_ = hc.conn.Close()
	hc.release()
	s.writers.leave(sub)
}

func (p *connWriters) forget(hc *hijacked) {
	if hc.token == 0 {
		return
	}
	p.mu.Lock()
	w := p.watch
	p.mu.Unlock()
	w.forget(hc.token)
}

// beat is the clock's look at a hijacked connection's heartbeat: one is
// due when nothing was written for b.quiet (less a grain). It returns
// when to look again.
func (sub *subscriber) beat(now int64, b beatTiming) int64 {
	if sub.ws != nil {
		return sub.wsBeat(now, b)
	}
	sub.mu.Lock()
	hc := sub.hc
	if hc == nil || hc.ended || sub.closed {
		sub.mu.Unlock()
		return 0
	}
	if hc.running {
		// The writer is at it; its write counts.
		sub.mu.Unlock()
		return b.next(now)
	}
	if last := hc.lastWrite; now-last < b.quiet-b.grain {
		sub.mu.Unlock()
		return b.next(last)
	}
	hc.beat = true
	// Idle for a whole heartbeat: hold no queue.
	sub.dropQueuesLocked()
	run, _ := sub.wakeLocked()
	sub.mu.Unlock()
	sub.wakeUp(run, nil)
	return b.next(now)
}

// beatTiming places heartbeats: one after quiet of silence, looked at on
// a grid of grain so that the clock handles many connections per wake-up.
// quiet is the heartbeat interval less an eighth (at most a second), so
// that a connection is never silent for longer than the interval.
type beatTiming struct {
	quiet, grain int64
}

func newBeatTiming(interval time.Duration) beatTiming {
	slack := min(interval/8, time.Second)
	return beatTiming{quiet: int64(interval - slack), grain: max(int64(slack/2), 1)}
}

// next is when to look again after a write at t: t+quiet, rounded down to
// the grid (earlier, never later).
func (b beatTiming) next(t int64) int64 {
	at := t + b.quiet
	return max(at-at%b.grain, 1)
}

// responseHead is the status line and headers of a hijacked subscription,
// as net/http would write them: the handler's headers sorted, then Date
// and chunked transfer encoding.
func responseHead(h http.Header) []byte {
	b := make([]byte, 0, 512)
	b = append(b, "HTTP/1.1 200 OK\r\n"...)
	bw := appendWriter{b}
	_ = h.Write(&bw)
	b = bw.b
	b = append(b, "Date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\nTransfer-Encoding: chunked\r\n\r\n"...)
	return b
}

type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// terminator ends a chunked body.
const terminator = "0\r\n\r\n"

// writeChunked writes head, then frames in chunks of up to writeChunk
// bytes (one frame larger than that is a chunk of its own), one write per
// chunk, and, when last, the terminating chunk with the last one. It
// counts the frames' bytes written.
func writeChunked(conn net.Conn, head []byte, frames [][]byte, last bool, m *metrics) (int, error) {
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	written := 0
	defer func() { m.bytesWritten.Add(float64(written)) }()
	i := 0
	for {
		b := append((*bp)[:0], head...)
		head = nil
		n, j := 0, i
		for ; j < len(frames) && (j == i || n+len(frames[j]) <= writeChunk); j++ {
			n += len(frames[j])
		}
		if n > 0 {
			b = strconv.AppendInt(b, int64(n), 16)
			b = append(b, '\r', '\n')
			for ; i < j; i++ {
				b = append(b, frames[i]...)
			}
			b = append(b, '\r', '\n')
		}
		i = j
		done := i == len(frames)
		if done && last {
			b = append(b, terminator...)
		}
		if cap(b) <= maxPooledBatch {
			*bp = b[:0]
		}
		if len(b) > 0 {
			if _, err := conn.Write(b); err != nil {
				return written, err
			}
		}
		written += n
		if done {
			return written, nil
		}
	}
}
