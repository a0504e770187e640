package sser

import (
	"testing"
	"time"
)

// A new WebSocket subscriber gets each stream's retained state first, as
// event messages without an id, then subscribed; a cleared stream gives
// nothing. WebSocket and SSE subscribers of the same streams are different
// sets (one encodes WebSocket messages, the other SSE frames), and both
// receive each event.
func TestWSRetainedStateAndSets(t *testing.T) {
	ts := startServer(t, Options{})
	ctx := t.Context()
	for _, ev := range []Event{
		{Stream: "a", Msg: "state a", Retain: true},
		{Stream: "b", Msg: "state b", Retain: true},
		{Stream: "b", Retain: true}, // a clear
	} {
		if err := ts.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	one := mustDialWS(t, ts.wsURL("stream=a"), nil)
	if m := one.next(t, 5*time.Second); m.Type != "event" || m.Stream != "a" || m.Data != "state a" || m.ID != "" {
		t.Fatalf("first message %+v, want a's retained state without an id", m)
	}
	if m := one.next(t, 5*time.Second); m.Type != "subscribed" || m.ID == "" {
		t.Fatalf("then %+v, want subscribed with an id", m)
	}
	two := mustDialWS(t, ts.wsURL("stream=a&stream=b"), nil)
	if m := two.next(t, 5*time.Second); m.Type != "event" || m.Stream != "a" || m.Data != "state a" || m.ID != "" {
		t.Fatalf("first message %+v, want a's retained state without an id (b was cleared)", m)
	}
	if m := two.next(t, 5*time.Second); m.Type != "subscribed" {
		t.Fatalf("then %+v, want subscribed", m)
	}
	sse := ts.dial(t, "stream=a&stream=b", "", nil)
	sse.WaitID(t, 5*time.Second)
	ts.hub.mu.Lock()
	sets := len(ts.hub.sets)
	ts.hub.mu.Unlock()
	if sets != 2 {
		t.Fatalf("%d stream sets, want 2: WebSocket and SSE subscribers of a and b apart", sets)
	}
	if err := ts.Publish(ctx, Event{Stream: "b", Msg: "live"}); err != nil {
		t.Fatal(err)
	}
	ev := sse.Collect(2, 5*time.Second)[1]
	m := two.events(t, 1, 5*time.Second)[0]
	if m.Stream != "b" || m.Data != "live" || m.ID != ev.ID || ev.Data != "live" {
		t.Fatalf("WebSocket %+v, SSE %+v: want the live event on b with the same id", m, ev)
	}
}
