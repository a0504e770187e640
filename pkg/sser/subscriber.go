package sser

import (
	"strings"
	"sync"
	"time"
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
)

func (r closeReason) String() string {
	switch r {
	case reasonOverflow:
		return "overflow"
	case reasonDrain:
		return "drain"
	case reasonMaxAge:
		return "max_age"
	case reasonShutdown:
		return "shutdown"
	}
	return "none"
}

// subscriber is one SSE connection's queue. The hub pushes encoded frames,
// shared with every other subscriber; one writer goroutine takes everything
// queued and writes it with one flush. The queue is bounded in frames: a
// subscriber that falls further behind is closed, never waited for.
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

	wake chan struct{}
	done chan struct{}

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
	lacks      position
	drainTimer *time.Timer
}

func newSubscriber(streams []string, maxQueue int) *subscriber {
	return &subscriber{
		streams:  streams,
		key:      strings.Join(streams, "\x00"),
		maxQueue: maxQueue,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
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
	s.mu.Unlock()
	s.signal()
	return true
}

// pushUnbounded queues frames past the limit: the replay on connect, which
// the history bounds already.
func (s *subscriber) pushUnbounded(frames ...[]byte) {
	s.mu.Lock()
	s.queue = append(s.queue, frames...)
	s.mu.Unlock()
	s.signal()
}

func (s *subscriber) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns everything queued. The writer hands the slice back with
// recycle once written, so a busy subscriber allocates no new queue.
func (s *subscriber) take() [][]byte {
	s.mu.Lock()
	q := s.queue
	s.queue = s.spare
	s.spare = nil
	s.mu.Unlock()
	return q
}

func (s *subscriber) recycle(q [][]byte) {
	clear(q)
	s.mu.Lock()
	if s.spare == nil && cap(q) <= 4*s.maxQueue {
		s.spare = q[:0]
	}
	s.mu.Unlock()
}

// close ends the subscription for reason; the first reason wins.
func (s *subscriber) close(reason closeReason) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	s.reason = reason
	close(s.done)
	return true
}

func (s *subscriber) closeReason() closeReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}
