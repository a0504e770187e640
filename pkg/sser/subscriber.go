package sser

import (
	"strings"
	"sync"
)

// closeReason says why a subscriber's connection was ended by the server.
type closeReason int

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
	streams  []string
	maxQueue int
	// key names the set of streams, for subscribers of several: those with
	// the same set share one encoding of each frame.
	key string

	mu     sync.Mutex
	queue  [][]byte
	spare  [][]byte
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
	return &subscriber{
		streams:  streams,
		key:      strings.Join(streams, "\x00"),
		maxQueue: maxQueue,
		tm:       subTimers{idx: -1},
	}
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

// push queues a frame. It reports false when the queue is full; the caller
// then closes the subscriber.
func (s *subscriber) push(frame []byte) bool {
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
	s.mu.Lock()
	q := s.takeLocked()
	s.mu.Unlock()
	return q
}

func (s *subscriber) takeLocked() [][]byte {
	q := s.queue
	s.queue = s.spare
	s.spare = nil
	return q
}

func (s *subscriber) recycle(q [][]byte) {
	clear(q)
	s.mu.Lock()
	s.recycleLocked(q)
	s.mu.Unlock()
}

func (s *subscriber) recycleLocked(q [][]byte) {
	if s.spare == nil && cap(q) <= 4*s.maxQueue {
		s.spare = q[:0]
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
