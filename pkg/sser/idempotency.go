package sser

import (
	"sync"
	"time"
)

// maxIdempotencyKeys bounds the keys remembered, whatever the window.
const maxIdempotencyKeys = 100000

// idempotency remembers the answer to each publish that carried a key, for
// a window, so a publisher that retries (its answer was lost, or it gave up
// waiting) gets the first answer back instead of publishing twice. Keys are
// remembered by the replica that took the publish.
type idempotency struct {
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	seen  map[string]idemEntry
	order []idemKeyAt // oldest first
	// inflight holds keys being published now, so a concurrent retry waits
	// for the first attempt's answer.
	inflight map[string]chan struct{}
}

type idemEntry struct {
	ans Published
	at  time.Time
}

type idemKeyAt struct {
	key string
	at  time.Time
}

func newIdempotency(window time.Duration) *idempotency {
	return &idempotency{window: window, now: time.Now, seen: make(map[string]idemEntry), inflight: make(map[string]chan struct{})}
}

// do runs publish once per key within the window: a repeat gets the first
// answer and true. A failed publish is not remembered, so its retry runs.
func (d *idempotency) do(key string, publish func() (Published, error)) (Published, bool, error) {
	if d.window <= 0 || key == "" {
		ans, err := publish()
		return ans, false, err
	}
	for {
		d.mu.Lock()
		d.expireLocked()
		if e, ok := d.seen[key]; ok {
			d.mu.Unlock()
			return e.ans, true, nil
		}
		wait, busy := d.inflight[key]
		if !busy {
			d.inflight[key] = make(chan struct{})
			d.mu.Unlock()
			break
		}
		d.mu.Unlock()
		<-wait
	}
	ans, err := publish()
	d.mu.Lock()
	ch := d.inflight[key]
	delete(d.inflight, key)
	if err == nil {
		now := d.now()
		d.seen[key] = idemEntry{ans: ans, at: now}
		d.order = append(d.order, idemKeyAt{key, now})
		for len(d.seen) > maxIdempotencyKeys {
			d.forgetOldestLocked()
		}
	}
	d.mu.Unlock()
	close(ch)
	return ans, false, err
}

func (d *idempotency) expireLocked() {
	cut := d.now().Add(-d.window)
	for len(d.order) > 0 && d.order[0].at.Before(cut) {
		d.forgetOldestLocked()
	}
}

func (d *idempotency) forgetOldestLocked() {
	k := d.order[0]
	d.order[0] = idemKeyAt{}
	d.order = d.order[1:]
	if e, ok := d.seen[k.key]; ok && e.at.Equal(k.at) {
		delete(d.seen, k.key)
	}
}

// validIdempotencyKey accepts 1-128 printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}
