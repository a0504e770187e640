package sser

import (
	"sync"
	"time"
)

// clock is the one timer of a hub's subscribers: drain closes, maximum
// connection time, credential expiry and, for hijacked connections,
// heartbeats. Each subscriber is in a min-heap at most once, at the
// earliest of its deadlines; one goroutine sleeps until the first and calls
// fire for every subscriber due, which sets what is left. The goroutine
// runs only while the heap holds something.
//
// A connection therefore costs no time.Timer of its own: at 15,000
// connections and a 15 s heartbeat the clock wakes a few times a second
// and handles about 1,000 subscribers per second, in O(log n) each.
//
// Lock order: hub.mu, then clock.mu; fire is called with no lock held.
type clock struct {
	fire func(sub *subscriber, now int64)

	mu      sync.Mutex
	heap    []*subscriber
	running bool
	kick    chan struct{}
}

// subTimers are a subscriber's deadlines, in monoNow nanoseconds, 0 for
// none. Guarded by clock.mu.
type subTimers struct {
	at  int64 // the earliest of the others: the heap's key
	idx int32 // place in the heap, -1 when not in it
	off bool  // removed for good: never scheduled again

	drainAt int64 // close for the drain
	endAt   int64 // close for the maximum connection time or the credential's expiry
	expiry  bool  // endAt is the credential's expiry
	beatAt  int64 // look whether a heartbeat is due
}

func (t *subTimers) earliest() int64 {
	at := int64(0)
	for _, v := range [...]int64{t.drainAt, t.endAt, t.beatAt} {
		if v != 0 && (at == 0 || v < at) {
			at = v
		}
	}
	return at
}

// monoBase anchors monoNow: monotonic nanoseconds, cheap to compare and store.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

func newClock(fire func(*subscriber, int64)) *clock {
	return &clock{fire: fire, kick: make(chan struct{}, 1)}
}

// set changes sub's deadlines with f and places it in the heap at the
// earliest of them (out of it when none is left).
func (c *clock) set(sub *subscriber, f func(t *subTimers)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &sub.tm
	if t.off {
		return
	}
	f(t)
	at := t.earliest()
	switch {
	case at == 0:
		if t.idx >= 0 {
			c.removeAt(int(t.idx))
		}
		return
	case t.idx >= 0:
		t.at = at
		c.fix(int(t.idx))
	default:
		t.at = at
		t.idx = int32(len(c.heap))
		c.heap = append(c.heap, sub)
		c.up(int(t.idx))
	}
	if t.idx == 0 {
		c.wake()
	}
	if !c.running {
		c.running = true
		go c.run()
	}
}

// remove takes sub out for good: later sets are ignored.
func (c *clock) remove(sub *subscriber) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sub.tm.off = true
	if sub.tm.idx >= 0 {
		c.removeAt(int(sub.tm.idx))
		if len(c.heap) == 0 {
			c.wake()
		}
	}
}

// timers is a copy of sub's deadlines.
func (c *clock) timers(sub *subscriber) subTimers {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sub.tm
}

// len is the number of subscribers waiting.
func (c *clock) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.heap)
}

func (c *clock) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// maxFirePerRound bounds the subscribers taken off the heap before fire
// is called for them, so the slice holding them stays small.
const maxFirePerRound = 1024

func (c *clock) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []*subscriber
	for {
		c.mu.Lock()
		if len(c.heap) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		now := monoNow()
		for len(c.heap) > 0 && c.heap[0].tm.at <= now && len(due) < maxFirePerRound {
			sub := c.heap[0]
			c.removeAt(0)
			due = append(due, sub)
		}
		wait := time.Duration(0)
		if len(due) == 0 {
			wait = time.Duration(c.heap[0].tm.at - now)
		}
		c.mu.Unlock()
		if len(due) > 0 {
			for _, sub := range due {
				c.fire(sub, now)
			}
			clear(due)
			due = due[:0]
			continue
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-c.kick:
		}
	}
}

// The heap, ordered by tm.at; each subscriber knows its index.

func (c *clock) less(i, j int) bool { return c.heap[i].tm.at < c.heap[j].tm.at }

func (c *clock) swap(i, j int) {
	c.heap[i], c.heap[j] = c.heap[j], c.heap[i]
	c.heap[i].tm.idx = int32(i)
	c.heap[j].tm.idx = int32(j)
}

func (c *clock) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !c.less(i, p) {
			return
		}
		c.swap(i, p)
		i = p
	}
}

func (c *clock) down(i int) bool {
	start := i
	n := len(c.heap)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && c.less(r, l) {
			m = r
		}
		if !c.less(m, i) {
			break
		}
		c.swap(i, m)
		i = m
	}
	return i > start
}

func (c *clock) fix(i int) {
	if !c.down(i) {
		c.up(i)
	}
}

func (c *clock) removeAt(i int) {
	last := len(c.heap) - 1
	sub := c.heap[i]
	if i != last {
		c.swap(i, last)
	}
	c.heap[last] = nil
	c.heap = c.heap[:last]
	if i != last {
		c.fix(i)
	}
	sub.tm.idx = -1
	sub.tm.at = 0
	if cap(c.heap) > 64 && len(c.heap) < cap(c.heap)/4 {
		c.heap = append([]*subscriber(nil), c.heap...)
	}
}
