package sser

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
)

// A client that missed more than one resume may replay gets the oldest part,
// then the connection ends; resuming from its last id pages through the
// rest, each event exactly once.
func TestReplayIsBoundedAndPagesThroughReconnects(t *testing.T) {
	ts := startServer(t, Options{MaxReplayEvents: 10, HistorySize: 100})
	if err := ts.Send(t.Context(), "other", "0"); err != nil {
		t.Fatal(err)
	}
	sub := ssetest.Dial(t, ts.url("stream=p"), "")
	id := sub.WaitID(t, 5*time.Second)
	sub.Close()
	for i := 1; i <= 35; i++ {
		if err := ts.Send(t.Context(), "p", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for page := 0; page < 5 && len(got) < 35; page++ {
		again := ssetest.Dial(t, ts.url("stream=p"), id)
		want := min(10, 35-len(got))
		evs := again.Collect(want, 5*time.Second)
		for _, e := range evs {
			got = append(got, e.Data)
		}
		partial := again.Resp.Header.Get("X-Sser-Replay") == "partial"
		if partial {
			select {
			case <-again.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("a partial replay did not end the connection")
			}
		}
		if len(evs) > 0 {
			id = evs[len(evs)-1].ID
		}
		again.Close()
	}
	if strings.Join(got, ",") != strings.Join(msgs(1, 35), ",") {
		t.Fatalf("paged replay gave %v, want 1..35 once each", got)
	}
}

// A resume point naming origins this replica never heard of neither
// inflates the ids it writes nor replays more than the real part lacks.
func TestInventedOriginsInAResumePointAreIgnored(t *testing.T) {
	ts := startServer(t, Options{})
	sub := ssetest.Dial(t, ts.url("stream=i"), "")
	for i := 1; i <= 3; i++ {
		if err := ts.Send(t.Context(), "i", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	evs := sub.Collect(3, 5*time.Second)
	real := evs[1].ID // has 1 and 2
	sub.Close()
	var parts []string
	for i := range 1000 {
		parts = append(parts, fmt.Sprintf("a%04d.1", i))
	}
	parts = append(parts, real)
	sortPositionText(parts)
	forged := strings.Join(parts, "-")
	again := ssetest.Dial(t, ts.url("stream=i"), forged)
	got := again.Next(t, 5*time.Second)
	if got.Data != "3" {
		t.Fatalf("replayed %q first, want 3 (the only event the real part lacks)", got.Data)
	}
	if err := ts.Send(t.Context(), "i", "4"); err != nil {
		t.Fatal(err)
	}
	live := again.Next(t, 5*time.Second)
	if live.Data != "4" || len(live.ID) > len(ts.hub.posID)+4*16 {
		t.Errorf("live event %q with a %d-byte id; this replica writes %d bytes", live.Data, len(live.ID), len(ts.hub.posID))
	}
}

// sortPositionText sorts "origin.seq" elements by origin, as ids are written.
func sortPositionText(parts []string) {
	for i := 1; i < len(parts); i++ {
		for j := i; j > 0 && strings.SplitN(parts[j], ".", 2)[0] < strings.SplitN(parts[j-1], ".", 2)[0]; j-- {
			parts[j], parts[j-1] = parts[j-1], parts[j]
		}
	}
}

func TestStreamsPerConnectionAreCapped(t *testing.T) {
	ts := startServer(t, Options{MaxStreamsPerConnection: 3})
	q := "stream=a&stream=b&stream=c&stream=d"
	resp, err := http.Get(ts.url(q))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("4 streams with a cap of 3: %d, want 400", resp.StatusCode)
	}
	if err := ts.Send(t.Context(), "a", "0"); err != nil {
		t.Fatal(err)
	}
	sub := ssetest.Dial(t, ts.url("stream=a&stream=b&stream=c"), "")
	sub.WaitID(t, 5*time.Second)
}

// History is bounded in streams and bytes across streams, oldest first, and
// streams whose history went and that nobody reads are forgotten.
func TestHistoryBoundedInStreamsAndBytes(t *testing.T) {
	h := newHub(testLogger(t), newMetrics(nil), 1000, time.Hour)
	h.hist.maxStreams = 10
	for i := range 100 {
		h.apply([]Event{{Stream: "s" + strconv.Itoa(i), Msg: "x", Origin: "o", Seq: uint64(i + 1)}}, "peer")
	}
	if h.hist.streams != 10 || len(h.streams) != 10 || h.hist.len() != 10 {
		t.Errorf("%d streams hold history, %d known, %d events; want 10 each", h.hist.streams, len(h.streams), h.hist.len())
	}
	if _, ok := h.streams["s99"]; !ok {
		t.Error("the newest stream was evicted instead of the oldest")
	}
	h.hist.maxBytes = 20 * (&histEntry{frame: make([]byte, 60), ev: Event{Msg: strings.Repeat("y", 10)}}).size()
	for i := range 100 {
		h.apply([]Event{{Stream: "b", Msg: strings.Repeat("y", 10), Origin: "o", Seq: uint64(101 + i)}}, "peer")
	}
	if h.hist.bytes > h.hist.maxBytes {
		t.Errorf("history holds %d bytes, bound %d", h.hist.bytes, h.hist.maxBytes)
	}
}
