package sser

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// testHub is a hub with a clock the test moves.
func testHub(size int, age time.Duration) (*hub, *time.Time) {
	h := newHub(logr.Discard(), newMetrics(nil), size, age)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	return h, &now
}

func TestHistoryBoundedBySizeAndAge(t *testing.T) {
	h, now := testHub(3, time.Minute)
	for i := uint64(1); i <= 5; i++ {
		h.apply([]Event{{Stream: "s", Msg: "m", Origin: "a", Seq: i}}, "peer")
	}
	if n := h.historyLen(); n != 3 {
		t.Fatalf("history holds %d, want the size limit 3", n)
	}
	h.mu.Lock()
	evicted := h.streams["s"].evicted["a"]
	h.mu.Unlock()
	if evicted != 2 {
		t.Errorf("evicted marker = %d, want 2", evicted)
	}
	*now = now.Add(2 * time.Minute)
	h.apply([]Event{{Stream: "s", Msg: "m", Origin: "a", Seq: 6}}, "peer")
	if n := h.historyLen(); n != 1 {
		t.Fatalf("history holds %d after the age limit, want only the new event", n)
	}
}

func TestSweepDropsIdleOriginsFromIDs(t *testing.T) {
	h, now := testHub(100, time.Minute)
	h.apply([]Event{{Stream: "s", Msg: "m", Origin: "old", Seq: 1}}, "peer")
	*now = now.Add(30 * time.Second)
	h.apply([]Event{{Stream: "t", Msg: "m", Origin: "new", Seq: 1}}, "peer")
	if h.pos.String() != "new.1-old.1" {
		t.Fatalf("position %q", h.pos.String())
	}
	*now = now.Add(45 * time.Second) // old: 75s idle; new: 45s
	h.sweep()
	if h.pos.String() != "new.1" {
		t.Errorf("after sweep position %q, want the idle origin gone", h.pos.String())
	}
	if _, ok := h.streams["s"]; ok {
		t.Error("a stream with no history and no subscriber was kept")
	}
	// The idle origin is remembered for duplicates a while longer.
	h.apply([]Event{{Stream: "s", Msg: "m", Origin: "old", Seq: 1}}, "peer")
	if h.historyLen() != 1 {
		t.Error("a duplicate of a forgotten-from-ids origin was applied again")
	}
}

func TestSeedEventsHaveNoIDAndNoHistory(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	sub := newSubscriber([]string{"s"}, 10)
	if _, ok := h.subscribe(sub, nil, false, 1000); !ok {
		t.Fatal("subscribe refused")
	}
	sub.take() // the preamble
	h.apply([]Event{{Stream: "s", Msg: "seed"}}, "peer")
	got := sub.take()
	if len(got) != 1 || string(got[0]) != "data: seed\n\n" {
		t.Fatalf("frames %q, want one frame without an id", got)
	}
	if h.historyLen() != 0 || h.pos.String() != "" {
		t.Error("a seed event entered history or the position")
	}
}
