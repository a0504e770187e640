package sser

import (
	"sync"
)

// closeReason says why a subscriber's connection was ended by the server.
type closeReason uint8

const (
	reasonNone closeReason = iota
	// reasonOverflow: the client fell behind by more than its queue.
	reasonOverflow
	// reasonDrain: the replica is draining before shutdown.
	reasonDrain
	// reasonMaxAge: the connection reached its maximum lifetime.
	reasonMaxAge
	// reasonShutdown: the server stopped.
	reasonShutdown
	// reasonExpired: the client's credential expired; it is told
	// (sser-expired) and counted with max_age, as a connection that
	// reached the end of its life.
	reasonExpired
)

func (r closeReason) String() string {
	switch r {
	case reasonOverflow:
		return "overflow"
	case reasonDrain:
		return "drain"
	case reasonMaxAge, reasonExpired:
		return "max_age"
	case reasonShutdown:
		return "shutdown"
	}
	return "none"
}

// subscriber is one SSE connection's queue. The hub pushes encoded frames,
// shared with every other subscriber; one writer at a time takes everything
// queued and writes it with one flush. The queue is bounded in frames: a
// subscriber that falls further behind is closed, never waited for.
//
// The writer is either the handler's goroutine, woken through wake (the
// connection net/http serves), or, for a hijacked connection, whichever
// pool goroutine push hands it to (see hijack.go): an idle hijacked
// subscriber has no goroutine at all.
type subscriber struct {
	streams  []string // the names subscribed to, sorted
	maxQueue int
	// patterns, format and allow describe a subscriber of several streams
	// or of patterns (see streamSet); key names its set: subscribers with
	// the same key share one encoding of each frame.
	patterns []string
	format   frameFormat
	allow    func(stream string) bool
	key      string
	// noPreamble leaves out the frames without data sent on connect.
	noPreamble bool
	// set is the subscriber's set, nil for a subscriber of one stream
	// alone. Guarded by hub.mu.
	set *streamSet

	mu    sync.Mutex
	queue [][]byte
	spare [][]byte
	// born is when the origin of the oldest live event queued accepted it
	// (Unix microseconds; 0: none queued), for the delivery latency.
	born int64
	// gz is set on a compressed connection (before it is registered; the
	// pointer is read only after): the history entry of each queued frame,
	// so the writer can use the entry's shared deflate, and the gzip
	// stream. A plain connection pays for the pointer only.
	gz     *gzConn
	closed bool
	reason closeReason

	// wake and done serve a handler-goroutine writer; nil on a hijacked
	// connection.
	wake chan struct{}
	done chan struct{}

	// A hijacked connection (conn set), guarded by mu.
	hc *hijacked
	// group is the ClientConnectionHandler the connection came through;
	// set before the subscriber is registered, then read only (under hub.mu).
	group *connGroup
	// ws is set for a WebSocket connection (ws.go), whose frames the hub
	// encodes as WebSocket messages; nil for SSE. Set at creation, then
	// read only.
	ws *wsConn

	// Guarded by hub.mu.
	//
	// ahead is the part of the client's resume position that this replica
	// has not reached yet. While it is set, frames of those origins at or
	// below it are skipped (the client has them) and every frame's id is
	// re-encoded to include it, so the client's id never moves backwards.
	ahead position
	// lacks holds, per origin, events the client missed that this replica
	// could no longer replay when it resumed: every id it is sent carries
	// them as holes. Set before the subscriber is registered, then read only.
	lacks position

	// tm are its deadlines in the hub's clock, guarded by clock.mu.
	tm subTimers
}

// newSubscriber is a subscriber whose writer is the handler's goroutine.
func newSubscriber(streams []string, maxQueue int) *subscriber {
	s := newConnSubscriber(streams, maxQueue)
	s.wake = make(chan struct{}, 1)
	s.done = make(chan struct{})
	return s
}

// newConnSubscriber is a subscriber for a connection about to be
// hijacked: nothing wakes a writer until attach gives it one, and
// useChannels turns it into a newSubscriber if the hijack fails.
func newConnSubscriber(streams []string, maxQueue int) *subscriber {
	s := &subscriber{
		streams:  streams,
		maxQueue: maxQueue,
		tm:       subTimers{idx: -1},
	}
	if len(streams) > 1 {
		s.format = formatTagged
		s.key = setKey(streams, nil, s.format, "")
	}
	return s
}

// selectSet makes the subscriber one of a set: of several streams, of
// patterns, or both. Frames name their stream in format (formatPlain
// means formatTagged here). allow filters the streams patterns match;
// grants names it in the set's key. Call it before subscribing.
func (s *subscriber) selectSet(patterns []string, format frameFormat, allow func(string) bool, grants string) {
	if len(s.streams) < 2 && len(patterns) == 0 && format != formatEnvelope {
		return
	}
	if format == formatPlain {
		format = formatTagged
	}
	if len(patterns) == 0 {
		allow, grants = nil, ""
	}
	s.patterns, s.format, s.allow = patterns, format, allow
	s.key = setKey(s.streams, patterns, format, grants)
}

// multi reports whether the subscriber is served through a set.
func (s *subscriber) multi() bool { return s.key != "" }

// single is the stream of a subscriber served without a set, "" for one
// of a set (which may have patterns only).
func (s *subscriber) single() string {
	if s.multi() || len(s.streams) == 0 {
		return ""
	}
	return s.streams[0]
}

// useChannels gives a subscriber made by newConnSubscriber the channels of
// a handler-goroutine writer, when its connection could not be hijacked.
func (s *subscriber) useChannels() {
	s.mu.Lock()
	s.wake = make(chan struct{}, 1)
	s.done = make(chan struct{})
	if s.closed {
		close(s.done)
	}
	s.mu.Unlock()
	s.signal(s.wake)
}

// push queues a frame of history entry e (nil for a frame of no event).
// It reports false when the queue is full; the caller then closes the
// subscriber.
func (s *subscriber) push(frame []byte, e *histEntry) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true
	}
	if len(s.queue) >= s.maxQueue {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, frame)
	if e != nil {
		if born := e.born; born != 0 && (s.born == 0 || born < s.born) {
			s.born = born
		}
	}
	if s.gz != nil {
		s.gz.ents = append(s.gz.ents, e)
	}
	run, wake := s.wakeLocked()
	s.mu.Unlock()
	s.wakeUp(run, wake)
	return true
}

// pushUnbounded queues frames past the limit: the replay on connect, which
// the history bounds already.
func (s *subscriber) pushUnbounded(frames ...[]byte) {
	s.mu.Lock()
	s.queue = append(s.queue, frames...)
	if s.gz != nil {
		for range frames {
			s.gz.ents = append(s.gz.ents, nil)
		}
	}
	run, wake := s.wakeLocked()
	s.mu.Unlock()
	s.wakeUp(run, wake)
}

// wakeLocked says how to get a writer to what was queued: run a hijacked
// connection's writer (true when none is running yet), or signal wake.
func (s *subscriber) wakeLocked() (bool, chan struct{}) {
	if hc := s.hc; hc != nil {
		if hc.running || hc.ended {
			return false, nil
		}
		hc.running = true
		return true, nil
	}
	return false, s.wake
}

func (s *subscriber) wakeUp(run bool, wake chan struct{}) {
	if run {
		s.hc.pool.run(s)
	} else if wake != nil {
		s.signal(wake)
	}
}

func (s *subscriber) signal(wake chan struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// take returns everything queued. The writer hands the slice back with
// recycle once written, so a busy subscriber allocates no new queue.
func (s *subscriber) take() [][]byte {
	b := s.takeBatch()
	return b.frames
}

// batch is what a writer takes from the queue at once.
type batch struct {
	frames [][]byte
	// ents are the frames' history entries, on a compressed connection.
	ents []*histEntry
	// born is when the origin of its oldest live event accepted it (see push).
	born int64
}

func (s *subscriber) takeBatch() batch {
	s.mu.Lock()
	b := s.takeLocked()
	s.mu.Unlock()
	return b
}

func (s *subscriber) takeLocked() batch {
	b := batch{frames: s.queue, born: s.born}
	s.queue, s.spare = s.spare, nil
	s.born = 0
	if q := s.gz; q != nil {
		b.ents = q.ents
		q.ents, q.spare = q.spare, nil
	}
	return b
}

// recycle hands a written batch's slices back for the next one.
func (s *subscriber) recycle(b batch) {
	clear(b.frames)
	clear(b.ents)
	s.mu.Lock()
	s.recycleLocked(b)
	s.mu.Unlock()
}

func (s *subscriber) recycleLocked(b batch) {
	if s.spare == nil && b.frames != nil && cap(b.frames) <= 4*s.maxQueue {
		s.spare = b.frames[:0]
	}
	if q := s.gz; q != nil && q.spare == nil && b.ents != nil && cap(b.ents) <= 4*s.maxQueue {
		q.spare = b.ents[:0]
	}
}

// gzConn is a compressed connection's state.
type gzConn struct {
	// ents runs beside the queue: the history entry of each frame (nil
	// for a frame of no event); spare is the slice to reuse. Guarded by
	// the subscriber's mu.
	ents, spare []*histEntry
	// z is the gzip stream, the writer's alone.
	z gzStream
}

// compressed reports whether the connection is gzip.
func (s *subscriber) compressed() bool { return s.gz != nil }

// dropQueuesLocked lets go of the queue's slices (a connection idle for a
// heartbeat, or ended); queue stays when frames wait in it.
func (s *subscriber) dropQueuesLocked() {
	s.spare = nil
	if len(s.queue) == 0 {
		s.queue = nil
	}
	if q := s.gz; q != nil {
		q.spare = nil
		if len(q.ents) == 0 {
			q.ents = nil
		}
	}
}

// close ends the subscription for reason; the first reason wins.
func (s *subscriber) close(reason closeReason) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.closed = true
	s.reason = reason
	if s.done != nil {
		close(s.done)
	}
	run := false
	if hc := s.hc; hc != nil {
		if reason == reasonShutdown {
			hc.hurry()
		}
		run, _ = s.wakeLocked()
	}
	s.mu.Unlock()
	s.wakeUp(run, nil)
	return true
}

func (s *subscriber) closeReason() closeReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}
