package sser

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"
)

// The clock fires every subscriber once its earliest deadline passes, in
// deadline order, never before it, and forgets removed ones.
func TestClockFiresInOrderAndForgetsRemoved(t *testing.T) {
	var mu sync.Mutex
	var fired []*subscriber
	deadline := map[*subscriber]int64{}
	early := 0
	c := newClock(func(sub *subscriber, now int64) {
		mu.Lock()
		defer mu.Unlock()
		fired = append(fired, sub)
		if now < deadline[sub] {
			early++
		}
	})
	drainAt := func(sub *subscriber, at int64) {
		mu.Lock()
		deadline[sub] = at
		mu.Unlock()
		c.set(sub, func(t *subTimers) { t.drainAt = at })
	}
	base := monoNow()
	subs := make([]*subscriber, 200)
	for i := range subs {
		subs[i] = newSubscriber([]string{"s"}, 1)
		drainAt(subs[i], base+int64(50*time.Millisecond)+rand.Int64N(int64(150*time.Millisecond)))
	}
	// Moved later, moved earlier, and removed.
	drainAt(subs[0], base+int64(300*time.Millisecond))
	drainAt(subs[1], base+int64(10*time.Millisecond))
	removed := subs[2:12]
	for _, sub := range removed {
		c.remove(sub)
		c.set(sub, func(t *subTimers) { t.drainAt = base }) // ignored once removed
	}
	want := len(subs) - len(removed)
	testproc.Eventually(t, 10*time.Second, "every subscriber fired", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(fired) == want
	})
	mu.Lock()
	defer mu.Unlock()
	if early > 0 {
		t.Errorf("%d subscribers fired before their deadline", early)
	}
	for _, sub := range removed {
		if slices.Contains(fired, sub) {
			t.Fatal("a removed subscriber fired")
		}
	}
	if !slices.IsSortedFunc(fired, func(a, b *subscriber) int { return cmp.Compare(deadline[a], deadline[b]) }) {
		t.Error("fired out of deadline order")
	}
	testproc.Eventually(t, 5*time.Second, "the clock's goroutine to stop with nothing to wait for", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.running && len(c.heap) == 0
	})
}

// The heap keeps its order through random sets and removals.
func TestClockHeapOrder(t *testing.T) {
	c := newClock(func(*subscriber, int64) {})
	c.running = true // no goroutine: the test looks at the heap alone
	subs := make([]*subscriber, 500)
	far := monoNow() + int64(time.Hour)
	for i := range subs {
		subs[i] = newSubscriber([]string{"s"}, 1)
	}
	for range 5000 {
		sub := subs[rand.N(len(subs))]
		switch rand.N(4) {
		case 0:
			c.set(sub, func(t *subTimers) { t.beatAt = 0; t.drainAt = 0; t.endAt = 0 })
		default:
			at := far + rand.Int64N(1e9)
			c.set(sub, func(t *subTimers) { t.beatAt = at })
		}
	}
	for i, sub := range c.heap {
		if sub.tm.idx != int32(i) {
			t.Fatalf("heap[%d] thinks it is at %d", i, sub.tm.idx)
		}
		if i > 0 && c.heap[(i-1)/2].tm.at > sub.tm.at {
			t.Fatalf("heap[%d] is before its parent", i)
		}
		if sub.tm.at != sub.tm.earliest() {
			t.Fatalf("heap[%d] keyed at %d, its earliest deadline is %d", i, sub.tm.at, sub.tm.earliest())
		}
	}
	for _, sub := range subs {
		if sub.tm.idx < 0 && sub.tm.earliest() != 0 {
			t.Fatal("a subscriber with a deadline is not in the heap")
		}
	}
}

// Heartbeats go out after the interval less an eighth (at most a second)
// of silence, looked at on a grid that is never later than that.
func TestBeatTiming(t *testing.T) {
	for _, interval := range []time.Duration{time.Millisecond, 20 * time.Millisecond, time.Second, 15 * time.Second, time.Minute} {
		b := newBeatTiming(interval)
		slack := min(interval/8, time.Second)
		if b.quiet != int64(interval-slack) {
			t.Errorf("%s: quiet %s", interval, time.Duration(b.quiet))
		}
		for range 100 {
			w := rand.Int64N(int64(time.Hour)) + 1
			at := b.next(w)
			if at > w+int64(interval) || at > w+b.quiet || at <= w+b.quiet-b.grain {
				t.Fatalf("%s: after a write at %d the next look is at +%s, want in (quiet-grain, quiet] = (%s, %s]",
					interval, w, time.Duration(at-w), time.Duration(b.quiet-b.grain), time.Duration(b.quiet))
			}
		}
	}
}
