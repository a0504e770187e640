package lossless

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// Retained state on real replicas: a new subscriber on each replica gets
// the stream's retained event first, then live events; a replica started
// after the retained event left every history gets it in its warm-up.
func TestRetainedStateOnEveryReplica(t *testing.T) {
	skipShort(t)
	c := newCluster(t, 3, "--history-size=5", "--outbox-size=10", "--peer-cutoff=300ms")
	c.start(0)
	c.start(1)
	// Back-pressure (503, nothing taken) is retried until the absent
	// replica is cut off.
	pub := func(i int, body string) {
		t.Helper()
		var err error
		waitFor(t, deadline, "publish "+body, func() bool {
			err = postJSON(t.Context(), http.DefaultClient, c.internalURL(i)+"/api/json/v1/publish", body)
			if err != nil && !errors.Is(err, errNotTaken) {
				t.Fatalf("publish %s on replica %d: %v", body, i, err)
			}
			return err == nil
		}, func() string { return fmt.Sprint(err) })
	}
	pub(0, `{"stream":"`+stream+`","msg":"state 1","retain":true}`)
	pub(1, `{"stream":"`+stream+`","msg":"state 2","retain":true}`)
	for n := range 20 { // push the retained events out of every history
		pub(n%2, fmt.Sprintf(`{"stream":%q,"msg":"filler-%d"}`, stream, n))
	}
	absent := `peer="` + ipOf(2) + `"`
	waitFor(t, deadline, "both replicas to cut the absent one off", func() bool {
		return c.metric(0, "sser_peer_cutoffs_total", absent) > 0 && c.metric(1, "sser_peer_cutoffs_total", absent) > 0
	})
	c.start(2) // warms up from a peer before it is ready

	var recs []*recorder
	for i := range 3 {
		r := subscribe(t, fmt.Sprintf("new@r%d", i), c.eventsURL(i))
		waitFor(t, deadline, "the subscriber to connect", func() bool { n, _, _ := r.connections(); return n == 1 })
		recs = append(recs, r)
	}
	pub(2, `{"stream":"`+stream+`","msg":"live"}`)
	waitAll(t, 20*time.Second, recs, 2)
	for i, r := range recs {
		if got := r.messages(); len(got) != 2 || got[0] != "state 2" || got[1] != "live" {
			t.Errorf("replica %d: a new subscriber got %q, want the retained state, then the live event", i, got)
		}
	}
	if v := c.metric(2, "sser_retained_streams"); v != 1 {
		t.Errorf("replica 2 holds %v retained streams, want 1", v)
	}
}
