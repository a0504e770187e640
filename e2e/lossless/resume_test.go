package lossless

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sser-dev/sser/pkg/client"
)

// A client disconnects, events are published meanwhile, and it
// reconnects to a different replica with Last-Event-ID: it receives exactly
// the missed events, then live ones.
func TestResumeOnAnotherReplica(t *testing.T) {
	skipShort(t)
	c := newCluster(t, 3)
	c.startAll()
	p, q := newPublisher(c, nil, "p", 0), newPublisher(c, nil, "q", 1)
	publishN := func(n int) { publishRounds(t, n, p, q) }

	a := subscribe(t, "a@r0", c.eventsURL(0))
	waitFor(t, deadline, "a to connect", func() bool { n, _, _ := a.connections(); return n == 1 })
	publishN(10)
	waitAll(t, deadline, []*recorder{a}, 20)
	_ = a.s.Close()
	id := a.s.LastEventID()
	if id == "" {
		t.Fatal("no Last-Event-ID after 20 events")
	}

	publishN(20) // missed by the client
	b := subscribe(t, "b@r2", c.eventsURL(2), client.WithLastEventID(id))
	waitAll(t, deadline, []*recorder{b}, 40)
	publishN(10) // live
	waitAll(t, deadline, []*recorder{b}, 60)

	if got := b.messages()[:40]; !sameSet(got, append(names("p", 10, 30), names("q", 10, 30)...)) {
		t.Errorf("replay on r2 = %q, want exactly p-10..29 and q-10..29", got)
	}
	tl := check(append(a.messages(), b.messages()...), p, q)
	if !tl.ok() {
		t.Errorf("across the move: %d received, %d duplicates, %d missing, %d out of order: %q", tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
	}
	if _, res, lost := b.connections(); !slices.Equal(res, []string{"exact"}) || len(lost) != 0 {
		t.Errorf("resume on r2: X-Sser-Resume %q, sser-lost %q; want [exact] and none", res, lost)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// A replica starts after events were published; a client resumes on it
// with an id from another replica and gets the missed events. The
// publishers' outboxes are small and their peer cut-off short, so they cut
// the absent replica off: what it missed can only come from the history it
// copies from a peer before it is ready.
func TestResumeOnReplicaStartedLater(t *testing.T) {
	skipShort(t)
	c := newCluster(t, 3, "--outbox-size=10", "--peer-cutoff=300ms")
	c.start(0)
	c.start(1)
	p, q := newPublisher(c, nil, "p", 0), newPublisher(c, nil, "q", 1)
	publishN := func(n int) { publishRounds(t, n, p, q) }

	a := subscribe(t, "a@r0", c.eventsURL(0))
	waitFor(t, deadline, "a to connect", func() bool { n, _, _ := a.connections(); return n == 1 })
	publishN(10)
	waitAll(t, deadline, []*recorder{a}, 20)
	_ = a.s.Close()
	id := a.s.LastEventID()

	publishN(30) // r2 is not running: r0 and r1 cut it off
	absent := `peer="` + ipOf(2) + `"`
	if d0, d1 := c.metric(0, "sser_peer_cutoffs_total", absent), c.metric(1, "sser_peer_cutoffs_total", absent); d0 == 0 || d1 == 0 {
		t.Fatalf("the absent replica was cut off %v and %v times; the test needs both outboxes to overflow", d0, d1)
	}

	c.start(2) // waits for /readyz
	b := subscribe(t, "b@r2", c.eventsURL(2), client.WithLastEventID(id))
	publishN(5) // live
	waitAll(t, 20*time.Second, []*recorder{b}, 70)

	tl := check(append(a.messages(), b.messages()...), p, q)
	if !tl.ok() {
		t.Errorf("resume on the new replica: %d received, %d duplicates, %d missing, %d out of order: %q", tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
	}
	if _, res, lost := b.connections(); !slices.Equal(res, []string{"exact"}) || len(lost) != 0 {
		t.Errorf("resume on r2: X-Sser-Resume %q, sser-lost %q; want [exact] and none", res, lost)
	}
	t.Logf("r2 warm-ups: copied %v, empty %v", c.metric(2, "sser_warmups_total", `result="copied"`), c.metric(2, "sser_warmups_total", `result="empty"`))
}

// Resuming from beyond history. The client is told, by the
// X-Sser-Resume header and a sser-lost event, and gets what remains.
func TestResumeBeyondHistory(t *testing.T) {
	skipShort(t)
	const size = 10
	c := newCluster(t, 2, "--history-size=10")
	c.startAll()

	a := subscribe(t, "a@r0", c.eventsURL(0))
	// watch shows when r1 has applied everything, so the replay below is
	// all from history.
	watch := subscribe(t, "watch@r1", c.eventsURL(1))
	waitFor(t, deadline, "subscribers to connect", func() bool {
		n, _, _ := a.connections()
		m, _, _ := watch.connections()
		return n == 1 && m == 1
	})
	publishOn(t, c, 0, names("p", 0, 5)...)
	waitAll(t, deadline, []*recorder{a}, 5)
	_ = a.s.Close()
	id := a.s.LastEventID()

	publishOn(t, c, 0, names("p", 5, 35)...) // 30 missed, only the last 10 held
	waitAll(t, deadline, []*recorder{watch}, 35)
	b := subscribe(t, "b@r1", c.eventsURL(1), client.WithLastEventID(id))
	waitAll(t, deadline, []*recorder{b}, size)
	waitFor(t, deadline, "the sser-lost event", func() bool { _, _, lost := b.connections(); return len(lost) > 0 })
	publishOn(t, c, 0, names("p", 35, 40)...)
	waitAll(t, deadline, []*recorder{b}, size+5)

	if got, want := b.messages(), names("p", 35-size, 40); !slices.Equal(got, want) {
		t.Errorf("after resuming beyond history got %q, want %q", got, want)
	}
	if _, res, lost := b.connections(); !slices.Equal(res, []string{"lost"}) || len(lost) != 1 {
		t.Errorf("X-Sser-Resume %q, sser-lost events %q; want [lost] and one", res, lost)
	}
	if n := c.metric(1, "sser_resumes_total", `result="lost"`); n != 1 {
		t.Errorf("sser_resumes_total{result=lost} = %v on r1, want 1", n)
	}
}

// A client that stores the id of each event it processes (as pkg/client's
// docs advise) and restarts from it must never get an event twice, even
// when it stops in the middle of a replay. Replicas apply events of
// different origins in different orders, so the replayed event's id must
// still cover everything the client had before. The two replicas are given
// the same events in different orders through the peer endpoint, exactly
// as their peer queues could deliver them.
func TestReplayedIDCoversResumePoint(t *testing.T) {
	skipShort(t)
	// oa, ob and oc are published by peers at these addresses.
	pa, pb, pc := subnet+"91", subnet+"92", subnet+"93"
	c := newCluster(t, 2, peersWith(2, pa, pb, pc))
	c.startAll()
	ev := func(origin string, seq int) map[string]any {
		return map[string]any{"stream": stream, "msg": origin + "-" + string(rune('0'+seq)), "origin": origin, "seq": seq}
	}

	a := subscribe(t, "a@r0", c.eventsURL(0))
	waitFor(t, deadline, "a to connect", func() bool { n, _, _ := a.connections(); return n == 1 })
	sendRaw(t, c, 0, pa, ev("oa", 1)) // r0 applies oa1, ob1
	sendRaw(t, c, 0, pb, ev("ob", 1))
	waitAll(t, deadline, []*recorder{a}, 2)
	_ = a.s.Close()
	id := a.s.LastEventID()
	sendRaw(t, c, 0, pa, ev("oa", 2))
	sendRaw(t, c, 1, pa, ev("oa", 1), ev("oa", 2)) // r1: oa2 before ob1
	sendRaw(t, c, 1, pb, ev("ob", 1))

	// Resume on r1, process one event, stop, remember its id.
	errStop := errors.New("processed one")
	var first client.Event
	s, err := client.NewStream(t.Context(), c.eventsURL(1), client.WithLastEventID(id),
		client.WithHandler(func(_ context.Context, e client.Event) error {
			first = e
			return errStop
		}))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(deadline):
		t.Fatal("no event replayed on r1")
	}
	if first.Data != "oa-2" {
		t.Fatalf("replay on r1 from %q began with %q, want oa-2", id, first.Data)
	}

	// Restart from the stored id on r0: nothing is missing there, so the
	// next event must be the live one.
	b := subscribe(t, "b@r0", c.eventsURL(0), client.WithLastEventID(first.ID))
	waitFor(t, deadline, "b to connect", func() bool { n, _, _ := b.connections(); return n == 1 })
	sendRaw(t, c, 0, pc, ev("oc", 1))
	waitFor(t, deadline, "the live event", func() bool { return slices.Contains(b.messages(), "oc-1") })
	if got := b.messages(); !slices.Equal(got, []string{"oc-1"}) {
		t.Errorf("client had oa-1, ob-1, oa-2 (ids %q then %q); resuming from the replayed event's id gave %q, want only the live oc-1",
			id, first.ID, got)
	}
}
