package sser

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
)

// latency reads sser_delivery_latency_seconds: observations and their sum.
func latency(t *testing.T, ts *testServer) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := ts.m.deliveryLatency.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// Every write of live events to a subscriber is observed once, on each
// way a connection is served.
func TestDeliveryLatencyIsObservedPerWrite(t *testing.T) {
	for _, kind := range []frontKind{frontHTTP1, frontWrapped, frontHTTP2} {
		t.Run(kind.String(), func(t *testing.T) {
			ts := startServerFront(t, Options{}, kind)
			sub, err := ssetest.ConnectClient(t.Context(), ts.client, ts.url("stream=l"), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(sub.Close)
			first := sub.WaitID(t, 5*time.Second)
			if n, _ := latency(t, ts); n != 0 {
				t.Fatalf("%d observations before any event: the connect preamble must not count", n)
			}
			if err := ts.Send(t.Context(), "l", "x"); err != nil {
				t.Fatal(err)
			}
			sub.Next(t, 5*time.Second)
			testproc.Eventually(t, 5*time.Second, "one observation", func() bool { n, _ := latency(t, ts); return n == 1 })
			// A resume from before the event replays it from history: not
			// live, not observed.
			again, err := ssetest.ConnectClient(t.Context(), ts.client, ts.url("stream=l"), first, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(again.Close)
			if ev := again.Next(t, 5*time.Second); ev.Data != "x" {
				t.Fatalf("resumed and got %q, want the replayed x", ev.Data)
			}
			if n, _ := latency(t, ts); n != 1 {
				t.Errorf("%d observations after a resume, want still 1", n)
			}
		})
	}
}

// A peer's event carries when its origin accepted it ("at"); the latency
// is counted from then. Without it (an older peer) it is counted from the
// event's arrival here.
func TestDeliveryLatencyCountsFromTheOrigin(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2")
	b := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2", "127.0.0.9"}, Options{WarmUpTimeout: -1, AntiEntropyInterval: -1})
	sub := ssetest.Dial(t, b.url("stream=l"), "")
	sub.WaitID(t, 5*time.Second)

	const age = 3 * time.Second
	postEvents(t, b, "127.0.0.9", []Event{{Stream: "l", Msg: "old", Origin: "zzz", Seq: 1, At: time.Now().Add(-age).UnixMicro()}})
	sub.Next(t, 5*time.Second)
	var sum float64
	testproc.Eventually(t, 5*time.Second, "the event observed", func() bool {
		var n uint64
		n, sum = latency(t, b)
		return n == 1
	})
	if sum < age.Seconds() {
		t.Errorf("latency %.3fs, want at least the %s since the origin accepted it", sum, age)
	}

	postEvents(t, b, "127.0.0.9", []Event{{Stream: "l", Msg: "no time", Origin: "zzz", Seq: 2}})
	sub.Next(t, 5*time.Second)
	var sum2 float64
	testproc.Eventually(t, 5*time.Second, "the second event observed", func() bool {
		var n uint64
		n, sum2 = latency(t, b)
		return n == 2
	})
	// Counted from its arrival: far below the age of the first, and not
	// from the zero time.
	if d := sum2 - sum; d < 0 || d >= age.Seconds() {
		t.Errorf("latency of an event with no origin time %.3fs, want it counted from its arrival", d)
	}
}

// The origin's time crosses the delivery stream: the peer's history holds
// the event with the time its origin stamped.
func TestOriginTimeCrossesThePeerStream(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2", "127.0.0.3")
	peers := []string{"127.0.0.2", "127.0.0.3"}
	a := startPeer(t, "127.0.0.2", port, peers, Options{WarmUpTimeout: -1, AntiEntropyInterval: -1})
	b := startPeer(t, "127.0.0.3", port, peers, Options{WarmUpTimeout: -1, AntiEntropyInterval: -1})
	before := time.Now().UnixMicro()
	if err := a.Send(t.Context(), "o", "x"); err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixMicro()
	entry := func(ts *testServer) Event {
		ts.hub.mu.Lock()
		defer ts.hub.mu.Unlock()
		if ss := ts.hub.streams["o"]; ss != nil && ss.hist.len() > 0 {
			return ss.hist.at(0).ev
		}
		return Event{}
	}
	testproc.Eventually(t, 10*time.Second, "b to hold a's event", func() bool { return entry(b).Msg == "x" })
	at := entry(a).At
	if at < before || at > after {
		t.Fatalf("a stamped at=%d, want within the Send (%d..%d)", at, before, after)
	}
	if got := entry(b).At; got != at {
		t.Errorf("b holds the event with at=%d, want a's %d", got, at)
	}
}

// "at" is an optional field of the peer format: absent, it decodes as 0;
// its case is checked like every other key's.
func TestEventTimeOnTheWire(t *testing.T) {
	b, err := json.Marshal(Event{Stream: "s", Msg: "m", Origin: "o", Seq: 1, At: 1700000000123456})
	if err != nil || !strings.Contains(string(b), `"at":1700000000123456`) {
		t.Errorf("encoded %s (%v), want an at field", b, err)
	}
	if b, _ := json.Marshal(Event{Stream: "s", Msg: "m"}); strings.Contains(string(b), `"at"`) {
		t.Errorf("encoded %s: an event with no time must not carry at", b)
	}
	for _, tc := range []struct {
		body    string
		at      int64
		wantErr bool
	}{
		{`{"stream":"s","msg":"m"}`, 0, false},
		{`{"stream":"s","msg":"m","at":42}`, 42, false},
		{`{"stream":"s","msg":{"px":1},"at":42}`, 42, false},
		{`{"stream":"s","msg":"m","At":42}`, 0, true},
		{`{"stream":"s","msg":"m","at":"soon"}`, 0, true},
	} {
		evs, err := decodeEvents([]byte(tc.body), 0)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err %v, want error %v", tc.body, err, tc.wantErr)
			continue
		}
		if err == nil && evs[0].At != tc.at {
			t.Errorf("%s: at = %d, want %d", tc.body, evs[0].At, tc.at)
		}
	}
}
