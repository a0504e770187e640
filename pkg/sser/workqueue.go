package sser

import (
	"context"
	"sync"
	"time"
)

// workQueue hands out keys to workers, each key to one worker at a time,
// like a controller's work queue: adding a queued key again does nothing,
// adding a key that is being worked on makes it come back once that work is
// done, and a key can come back after a delay. The worker always looks at
// the current state of its key, so nothing is lost by collapsing adds.
type workQueue struct {
	now func() time.Time

	mu    sync.Mutex
	due   map[string]time.Time
	busy  map[string]bool
	dirty map[string]bool
	wake  chan struct{}
}

func newWorkQueue() *workQueue {
	return &workQueue{now: time.Now, due: make(map[string]time.Time), busy: make(map[string]bool),
		dirty: make(map[string]bool), wake: make(chan struct{}, 1)}
}

// add queues key now.
func (q *workQueue) add(key string) { q.addAfter(key, 0) }

// addAfter queues key to be handed out after d, or sooner if it already is.
func (q *workQueue) addAfter(key string, d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.busy[key] && d == 0 {
		q.dirty[key] = true
		return
	}
	at := q.now().Add(d)
	if cur, ok := q.due[key]; !ok || at.Before(cur) {
		q.due[key] = at
	}
	q.signal()
}

func (q *workQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// get blocks until a key is due and no other worker has it; false when
// ctx ends.
func (q *workQueue) get(ctx context.Context) (string, bool) {
	for {
		q.mu.Lock()
		now := q.now()
		var key string
		var next time.Time
		for k, at := range q.due {
			if q.busy[k] {
				continue
			}
			if !at.After(now) {
				key = k
				break
			}
			if next.IsZero() || at.Before(next) {
				next = at
			}
		}
		if key != "" {
			delete(q.due, key)
			q.busy[key] = true
			q.mu.Unlock()
			return key, true
		}
		q.mu.Unlock()
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(next.Sub(now))
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-q.wake:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return "", false
		}
	}
}

// done releases key; it comes back at once if it was added meanwhile.
func (q *workQueue) done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.busy, key)
	if q.dirty[key] {
		delete(q.dirty, key)
		q.due[key] = q.now()
	}
	q.signal()
}

// len is the number of keys queued or being worked on.
func (q *workQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.due)
	for k := range q.busy {
		if _, queued := q.due[k]; !queued {
			n++
		}
	}
	return n
}
