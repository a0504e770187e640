package sser

import (
	"bytes"
	"net/http"
	"strings"

	"context"
	"errors"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"testing"
	"time"
)

func seqEvent(origin string, seq uint64) Event {
	return Event{Stream: "s", Msg: "m", Origin: origin, Seq: seq}
}

func TestSequencerOrdersHoldsAndDrops(t *testing.T) {
	q := newSequencer()
	now := time.Now()
	tests := []struct {
		seq  uint64
		want offerResult
	}{
		{5, offerApply},     // first sight: starts the origin
		{6, offerApply},     // next
		{6, offerDuplicate}, // again
		{9, offerHeld},      // past a gap
		{9, offerDuplicate}, // held already
		{4, offerDuplicate}, // before the origin was known here
	}
	for _, tt := range tests {
		if _, got := q.offer(seqEvent("o", tt.seq), now); got != tt.want {
			t.Errorf("offer(%d) = %v, want %v", tt.seq, got, tt.want)
		}
	}
	if after, upTo, ok := q.gap("o"); !ok || after != 6 || upTo != 8 {
		t.Errorf("gap = (%d, %d] %v, want (6, 8]", after, upTo, ok)
	}
	st := q.origins["o"]
	if _, res := q.offer(seqEvent("o", 7), now); res != offerApply {
		t.Fatalf("7 not applied: %v", res)
	}
	if _, ok := q.next(st); ok {
		t.Error("9 released before 8")
	}
	q.offer(seqEvent("o", 8), now)
	if ev, ok := q.next(st); !ok || ev.Seq != 9 {
		t.Errorf("next after 8 = %v %v, want 9", ev.Seq, ok)
	}
	if q.pending != 0 {
		t.Errorf("pending = %d after draining", q.pending)
	}
}

// Giving up a gap costs the events held behind it, not the size of the
// gap: a seq near the top of the range is given up at once.
func TestSequencerGiveUpIsIndependentOfTheGapSize(t *testing.T) {
	q := newSequencer()
	now := time.Now()
	st, _ := q.offer(seqEvent("o", 1), now)
	q.offer(seqEvent("o", 5), now)
	q.offer(seqEvent("o", 9_000_000_000_000_000_000), now)
	var lost [][2]uint64
	var applied []uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.giveUp(st, 9_000_000_000_000_000_000-1,
			func(lo, hi uint64) { lost = append(lost, [2]uint64{lo, hi}) },
			func(ev Event) { applied = append(applied, ev.Seq) })
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("giving up a huge gap did not return: it walks the gap")
	}
	want := [][2]uint64{{1, 4}, {5, 9_000_000_000_000_000_000 - 1}}
	if len(lost) != 2 || lost[0] != want[0] || lost[1] != want[1] {
		t.Errorf("lost ranges %v, want %v", lost, want)
	}
	if len(applied) != 2 || applied[0] != 5 || applied[1] != 9_000_000_000_000_000_000 {
		t.Errorf("applied %v, want 5 then the held event after the gap", applied)
	}
}

func TestSequencerBoundsWhatItHolds(t *testing.T) {
	q := newSequencer()
	now := time.Now()
	q.offer(seqEvent("o", 1), now)
	for s := uint64(3); s < 3+maxPendingPerOrigin; s++ {
		if _, res := q.offer(seqEvent("o", s), now); res != offerHeld {
			t.Fatalf("offer(%d) = %v, want held", s, res)
		}
	}
	if _, res := q.offer(seqEvent("o", 3+maxPendingPerOrigin), now); res != offerDeferred {
		t.Fatalf("past the bound: %v, want deferred (left to the repair)", res)
	}
	if _, upTo, _ := q.gap("o"); upTo != 2+maxPendingPerOrigin {
		t.Errorf("the repair aims at %d, want %d: a deferred event still says how far the origin got", upTo, 2+maxPendingPerOrigin)
	}
}

func TestSequencerRefusesSeqJumps(t *testing.T) {
	q := newSequencer()
	q.offer(seqEvent("o", 1), time.Now())
	far := seqEvent("o", 1+1000+1)
	if err := q.checkJump(&far, 0, 1000); !errors.Is(err, ErrSeqJump) {
		t.Errorf("jump of 1001 with a bound of 1000: %v", err)
	}
	// The origin says it no longer holds anything before 900: the jump
	// counts from there.
	if err := q.checkJump(&far, 900, 1000); err != nil {
		t.Errorf("jump from heldFrom: %v", err)
	}
	near := seqEvent("o", 1000)
	if err := q.checkJump(&near, 0, 1000); err != nil {
		t.Errorf("jump within the bound: %v", err)
	}
	fresh := seqEvent("new", 1<<60)
	if err := q.checkJump(&fresh, 0, 1000); err != nil {
		t.Errorf("a new origin may start anywhere: %v", err)
	}
}

func TestHubTellsEverySubscriberOfALossAndIDsKeepTheHole(t *testing.T) {
	h := newHub(testLogger(t), newMetrics(nil), 100, time.Hour)
	a := newSubscriber([]string{"a"}, 100)
	b := newSubscriber([]string{"b", "c"}, 100)
	for _, sub := range []*subscriber{a, b} {
		if _, ok := h.subscribe(sub, nil, false, 1000); !ok {
			t.Fatal("subscribe refused")
		}
		sub.take()
	}
	h.apply([]Event{seqEvent("o", 1), {Stream: "a", Msg: "after", Origin: "o", Seq: 5}}, "peer")
	h.giveUp("o", 4)
	for name, sub := range map[string]*subscriber{"a": a, "b": b} {
		frames := string(joinFrames(sub.take()))
		if !contains(frames, "event: sser-lost\ndata: {\"reason\":\"gap\",\"origin\":\"o\",\"after\":1,\"upTo\":4}\n") {
			t.Errorf("subscriber %s got %q, want an sser-lost notice for o 2..4", name, frames)
		}
	}
	if covers, _ := IDCovers(h.pos.String(), "o", 3); covers {
		t.Errorf("position %q after the loss claims o.3", h.pos.String())
	}
	if covers, _ := IDCovers(h.pos.String(), "o", 5); !covers {
		t.Errorf("position %q does not claim o.5, which was applied", h.pos.String())
	}
	if got := h.m.eventsLost; got == nil {
		t.Fatal("no lost counter")
	}
}

func TestWorkQueueCollapsesAndRequeues(t *testing.T) {
	q := newWorkQueue()
	q.add("a")
	q.add("a")
	q.add("b")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	first, _ := q.get(ctx)
	second, _ := q.get(ctx)
	if first == second || q.len() != 2 {
		t.Fatalf("got %q and %q, len %d: want a and b once each", first, second, q.len())
	}
	// Added while being worked on: comes back once done, not before.
	q.add(first)
	q.done(second)
	q.done(first)
	got, ok := q.get(ctx)
	if !ok || got != first {
		t.Fatalf("re-added key: got %q %v, want %q", got, ok, first)
	}
	q.done(got)
	q.addAfter("later", time.Hour)
	short, cancelShort := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancelShort()
	if k, ok := q.get(short); ok {
		t.Errorf("a key due in an hour was handed out: %q", k)
	}
}

func TestIdempotencyAppliesOnce(t *testing.T) {
	d := newIdempotency(time.Minute)
	calls := 0
	publish := func() (Published, error) {
		calls++
		return Published{Accepted: 1, Origin: "o", First: uint64(calls), Last: uint64(calls)}, nil
	}
	first, dup, err := d.do("k", publish)
	if err != nil || dup {
		t.Fatal(err, dup)
	}
	again, dup, _ := d.do("k", publish)
	if !dup || again != first || calls != 1 {
		t.Errorf("retry: %+v dup=%v calls=%d, want the first answer and one call", again, dup, calls)
	}
	// A failed publish is not remembered: its retry runs.
	_, _, err = d.do("fails", func() (Published, error) { return Published{}, ErrBackPressure })
	if !errors.Is(err, ErrBackPressure) {
		t.Fatal(err)
	}
	if _, dup, _ := d.do("fails", publish); dup || calls != 2 {
		t.Errorf("retry after a failure: dup=%v calls=%d", dup, calls)
	}
	// Past the window the key is forgotten.
	d.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if _, dup, _ := d.do("k", publish); dup {
		t.Error("key remembered past its window")
	}
	for _, k := range []string{"", "has space", string(make([]byte, 129))} {
		if validIdempotencyKey(k) {
			t.Errorf("key %q accepted", k)
		}
	}
}

func testLogger(t *testing.T) logr.Logger { return testr.New(t) }

func joinFrames(frames [][]byte) []byte { return bytes.Join(frames, nil) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// A hub that makes no progress fails liveness, so the pod is restarted,
// and passes again once it moves.
func TestHealthzFailsWhileTheHubIsFrozen(t *testing.T) {
	ts := startServer(t, Options{LivenessStall: 300 * time.Millisecond})
	status := func() int {
		resp, err := http.Get(ts.internal + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitUntil(t, "healthz 200", func() bool { return status() == http.StatusOK })
	ts.hub.mu.Lock() // what a request stuck under the hub's lock does
	waitUntil(t, "healthz 503 while the hub is frozen", func() bool { return status() == http.StatusServiceUnavailable })
	ts.hub.mu.Unlock()
	waitUntil(t, "healthz 200 again", func() bool { return status() == http.StatusOK })
}
