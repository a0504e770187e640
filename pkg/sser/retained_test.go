package sser

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
)

func retained(stream, origin string, seq uint64, at int64, msg string) Event {
	return Event{Stream: stream, Msg: msg, Origin: origin, Seq: seq, Retain: true, At: at}
}

// A new subscriber gets the stream's retained event first, with no id of
// its own, then the id-only frame and live events; a resuming one gets
// exactly what it missed, retained or not.
func TestRetainedStateFirstThenLive(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	h.apply([]Event{
		retained("s", "o", 1, 10, "state 1"),
		{Stream: "s", Msg: "update", Origin: "o", Seq: 2},
		retained("s", "o", 3, 30, "state 2"),
	}, "peer")
	sub := subscribeHub(t, h, "", "s")
	applyOne(h, "s", "o", 4)
	frames := sub.take()
	if len(frames) != 4 || !strings.HasPrefix(string(frames[0]), "retry: ") || string(frames[1]) != "data: state 2\n\n" || string(frames[2]) != "id: o.3\n\n" {
		t.Fatalf("frames %q, want retry, the retained event without an id, the id-only frame, the live event", frames)
	}
	if got := frameDatas(frames); !slices.Equal(got, []string{"state 2", "s/o.4"}) {
		t.Fatalf("data %q", got)
	}
	back := subscribeHub(t, h, "o.2", "s")
	if got := frameDatas(back.take()); !slices.Equal(got, []string{"state 2", "s/o.4"}) {
		t.Fatalf("resume from o.2 got %q, want exactly the missed events", got)
	}
	// Retained state outlives history.
	small, _ := testHub(1, time.Minute)
	small.apply([]Event{retained("s", "o", 1, 10, "state"), {Stream: "s", Msg: "later", Origin: "o", Seq: 2}}, "peer")
	if got := frameDatas(subscribeHub(t, small, "", "s").take()); !slices.Equal(got, []string{"state"}) {
		t.Fatalf("after history evicted it: %q", got)
	}
}

// Replicas that apply two publishers' retained events in different orders
// keep the same one: the latest At wins.
func TestRetainedStateConverges(t *testing.T) {
	x := []Event{retained("s", "x", 1, 200, "x wins"), retained("s", "x", 2, 100, "x old")}
	y := []Event{retained("s", "y", 1, 150, "y")}
	a, _ := testHub(100, time.Minute)
	b, _ := testHub(100, time.Minute)
	a.apply(x, "peer")
	a.apply(y, "peer")
	b.apply(x[:1], "peer")
	b.apply(y, "peer")
	b.apply(x[1:], "peer")
	for name, h := range map[string]*hub{"a": a, "b": b} {
		if got := frameDatas(subscribeHub(t, h, "", "s").take()); !slices.Equal(got, []string{"x wins"}) {
			t.Errorf("replica %s retained %q", name, got)
		}
	}
}

// A clear removes the retained state, is delivered to no one, and an older
// retained event that arrives after it does not bring the state back.
func TestRetainedStateClear(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	live := subscribeHub(t, h, "", "s")
	h.apply([]Event{retained("s", "x", 1, 100, "state"), {Stream: "s", Origin: "x", Seq: 2, Retain: true, At: 300}}, "peer")
	h.apply([]Event{retained("s", "y", 1, 200, "older than the clear")}, "peer")
	applyOne(h, "s", "x", 3)
	if got := frameDatas(live.take()); !slices.Equal(got, []string{"state", "older than the clear", "s/x.3"}) {
		t.Fatalf("live subscriber got %q: the clear must not be delivered", got)
	}
	frames := subscribeHub(t, h, "", "s").take()
	if got := frameDatas(frames); len(got) != 0 {
		t.Fatalf("new subscriber after the clear got %q", got)
	}
	// A resume across the clear replays around it; the id covers it.
	back := subscribeHub(t, h, "x.1", "s")
	got := back.take()
	if d := frameDatas(got); !slices.Equal(d, []string{"older than the clear", "s/x.3"}) {
		t.Fatalf("resume across the clear: %q", d)
	}
	if ids := frameIDs(got); ids[len(ids)-1] != "x.3-y.1" {
		t.Fatalf("ids %q", ids)
	}
	// Tombstones go after ten history ages.
	h.mu.Lock()
	h.sweepRetainedLocked(h.now().Add(11*time.Minute), time.Minute)
	kept := h.streams["s"].retained
	h.mu.Unlock()
	if kept != nil {
		t.Fatal("the clear was kept past ten history ages")
	}
}

// A pattern subscriber gets the retained state of every matching stream,
// in apply order, each naming its stream.
func TestRetainedStateForPatterns(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	h.apply([]Event{retained("p/b", "o", 1, 1, "b"), retained("q", "o", 2, 2, "q"), retained("p/a", "o", 3, 3, "a")}, "peer")
	frames := subscribeSet(t, h, "", formatPlain, nil, "p/*").take()
	if got := frameDatas(frames); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("data %q", got)
	}
	if got := frameStreams(frames); !slices.Equal(got, []string{"p/b", "p/a"}) {
		t.Fatalf("streams %q", got)
	}
}

// A new replica gets the retained state in its warm-up, also state that
// left the peer's history, and clears.
func TestRetainedStateInWarmUp(t *testing.T) {
	old, _ := testHub(2, time.Minute)
	old.apply([]Event{retained("a", "o", 1, 1, "a state"), retained("b", "o", 2, 2, "b state"), {Stream: "b", Origin: "o", Seq: 3, Retain: true, At: 3}}, "peer")
	for i := uint64(4); i < 10; i++ {
		applyOne(old, "a", "o", i)
	}
	snap := old.snapshotPage(0, 1000)
	fresh, _ := testHub(2, time.Minute)
	fresh.startWarming()
	if err := fresh.finishWarming(snap); err != nil {
		t.Fatal(err)
	}
	if got := frameDatas(subscribeHub(t, fresh, "", "a").take()); !slices.Equal(got, []string{"a state"}) {
		t.Fatalf("a: %q", got)
	}
	if got := frameDatas(subscribeHub(t, fresh, "", "b").take()); len(got) != 0 {
		t.Fatalf("b was cleared, got %q", got)
	}
	// The clear came along: an older retained event arriving now loses.
	fresh.apply([]Event{retained("b", "p", 1, 2, "late")}, "peer")
	if got := frameDatas(subscribeHub(t, fresh, "", "b").take()); len(got) != 0 {
		t.Fatalf("b after a late older event: %q", got)
	}
}

// Subscribers connecting while retained events are published: each one's
// first event is a retained state and every event after it follows with
// no gap and no duplicate at the seam.
func TestRetainedStateSeamUnderRace(t *testing.T) {
	for round := range 20 {
		h, _ := testHub(1000, time.Minute)
		const events, subs = 200, 20
		var wg sync.WaitGroup
		got := make([]*subscriber, subs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= events; i++ {
				h.apply([]Event{retained("s", "o", i, int64(i), strconv.FormatUint(i, 10))}, "peer")
			}
		}()
		for k := range subs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sub := newSubscriber([]string{"s"}, 10*events)
				if _, ok := h.subscribe(sub, nil, false, 1000); !ok {
					t.Error("subscribe refused")
				}
				got[k] = sub
			}()
		}
		wg.Wait()
		for k, sub := range got {
			datas := frameDatas(sub.take())
			if len(datas) == 0 {
				t.Fatalf("round %d, subscriber %d: no event (the publisher ran to the end after it subscribed or before)", round, k)
			}
			first, _ := strconv.Atoi(datas[0])
			for i, d := range datas {
				if d != strconv.Itoa(first+i) {
					t.Fatalf("round %d, subscriber %d: %q: a gap or a duplicate at %d", round, k, datas, i)
				}
			}
			if last := datas[len(datas)-1]; last != strconv.Itoa(events) {
				t.Fatalf("round %d, subscriber %d: ends at %s, want %d", round, k, last, events)
			}
		}
	}
}

func TestRetainValidation(t *testing.T) {
	for _, ev := range []Event{
		{Stream: "s", Msg: "m", Retain: true, At: -1},
		{Stream: "s"},
	} {
		if ev.Validate() == nil {
			t.Errorf("%+v accepted", ev)
		}
	}
	if err := (&Event{Stream: "s", Retain: true}).Validate(); err != nil {
		t.Errorf("a clear refused: %v", err)
	}
}

// Over HTTP: a publish with "retain": true is what a new subscriber gets
// first; a publisher cannot choose its own "at" to win; a publish with
// no msg clears.
func TestRetainedStateOverHTTP(t *testing.T) {
	ts := startServer(t, Options{})
	for _, body := range []string{
		`{"stream":"s","msg":"state","retain":true}`,
		`{"stream":"s","msg":"forged","retain":true,"at":1}`, // "at" is the server's: this one wins as the latest
	} {
		if resp, b := ts.post(t, PublishURLPath, "application/json", body); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
		}
	}
	sub := ssetest.Dial(t, ts.url("stream=s"), "")
	if ev := sub.Next(t, 10*time.Second); ev.Data != "forged" {
		t.Fatalf("first event %+v, want the latest retained", ev)
	}
	if resp, b := ts.post(t, PublishURLPath, "application/json", `{"stream":"s","retain":true}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("clear: %d %s", resp.StatusCode, b)
	}
	if err := ts.Send(t.Context(), "s", "live"); err != nil {
		t.Fatal(err)
	}
	if ev := sub.Next(t, 10*time.Second); ev.Data != "live" {
		t.Fatalf("after the clear the live subscriber got %+v, want the next live event", ev)
	}
	fresh := ssetest.Dial(t, ts.url("stream=s"), "")
	if err := ts.Send(t.Context(), "s", "after"); err != nil {
		t.Fatal(err)
	}
	if ev := fresh.Next(t, 10*time.Second); ev.Data != "after" {
		t.Fatalf("new subscriber after the clear got %+v first", ev)
	}
}
