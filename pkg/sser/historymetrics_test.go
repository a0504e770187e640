package sser

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// History depth is read at scrape time: events and bytes held, streams
// holding any, and the age of the oldest event, which follows the clock
// and the evictions.
func TestHistoryDepthGauges(t *testing.T) {
	h, now := testHub(3, time.Minute)
	c := historyCollector{h}
	want := func(events, streams int, age float64) {
		t.Helper()
		h.mu.Lock()
		bytes := h.hist.bytes
		h.mu.Unlock()
		exp := fmt.Sprintf(`
# HELP sser_history_bytes Bytes history holds, as counted against its byte bounds.
# TYPE sser_history_bytes gauge
sser_history_bytes %d
# HELP sser_history_events Events held in history for resuming clients, all streams.
# TYPE sser_history_events gauge
sser_history_events %d
# HELP sser_history_oldest_age_seconds Age of the oldest event in history (0 when it holds none): how far back a resuming client can be and still get every event.
# TYPE sser_history_oldest_age_seconds gauge
sser_history_oldest_age_seconds %g
# HELP sser_history_streams Streams holding at least one event in history.
# TYPE sser_history_streams gauge
sser_history_streams %d
`, bytes, events, age, streams)
		if err := testutil.CollectAndCompare(c, strings.NewReader(exp)); err != nil {
			t.Error(err)
		}
	}
	want(0, 0, 0)

	seq := uint64(0)
	publish := func(stream string) {
		seq++
		h.apply([]Event{{Stream: stream, Msg: "m", Origin: "a", Seq: seq}}, "peer")
	}
	publish("s")
	*now = now.Add(10 * time.Second)
	publish("s")
	publish("t")
	*now = now.Add(5 * time.Second)
	want(3, 2, 15)

	// Two more on s: its size bound (3) evicts its first event (15 s
	// old), so the oldest held is the second, applied 5 s ago.
	publish("s")
	publish("s")
	want(4, 2, 5)

	*now = now.Add(2 * time.Minute)
	h.sweep()
	want(0, 0, 0)
	if h.hist.bytes != 0 {
		t.Errorf("history bytes %d once empty", h.hist.bytes)
	}
}
