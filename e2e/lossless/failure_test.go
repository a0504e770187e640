package lossless

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SIGKILL one replica mid-stream. Its subscribers reconnect through
// the balancer to the others and miss nothing. The publishers use the other
// two replicas: what a killed process had accepted but not yet sent to its
// peers is gone with it, which sser does not promise to survive.
func TestKilledReplicaSubscribersMissNothing(t *testing.T) {
	skipShort(t)
	const (
		nSubs = 12
		per   = 150
	)
	c := newCluster(t, 3)
	c.startAll()
	b := newBalancer(t, c)
	b.waitReady(t, 0, 1, 2)
	recs := subscribeAll(t, b, nSubs)
	waitFor(t, deadline, "subscribers on every replica", func() bool {
		for i := range 3 {
			if b.activeOn(i) < nSubs/3 {
				return false
			}
		}
		return true
	})
	onKilled := b.activeOn(2)

	pubs := []*publisher{newPublisher(c, nil, "p", 0), newPublisher(c, nil, "q", 1)}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(pubs))
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(ctx, 50, per, nil); err != nil {
				errs <- err
			}
		}()
	}
	waitFor(t, deadline, "a third of the events", func() bool { return pubs[0].sent() >= per/3 && pubs[1].sent() >= per/3 })
	if err := c.rep(2).Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitAll(t, deadline, recs, 2*per, pubs...)

	moved := 0
	for _, r := range recs {
		tl := check(r.messages(), pubs...)
		if !tl.ok() {
			t.Errorf("%s: %d received, %d duplicates, %d missing, %d out of order: %q", r.name, tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
		}
		n, res, lost := r.connections()
		if n > 1 {
			moved++
		}
		if len(lost) > 0 {
			t.Errorf("%s: sser-lost %q (resume headers %q)", r.name, lost, res)
		}
	}
	if moved < onKilled {
		t.Errorf("%d subscribers reconnected, want at least the %d that were on the killed replica", moved, onKilled)
	}
	t.Logf("%d subscribers were on the killed replica; %d reconnected; each got all %d events once, in order", onKilled, moved, 2*per)
}

// A peer is paused (SIGSTOP) while events are published; the publishing
// replicas' outboxes are small and their peer cut-off short, so they cut
// the paused peer off and evict what it never acknowledged. When it runs
// again it learns from each origin what it no longer holds, fetches that
// range from the other replica's history, and its subscribers get every
// event of that window, in order, with nothing reported lost.
func TestPausedPeerRepairsGap(t *testing.T) {
	skipShort(t)
	const queue = 20
	c := newCluster(t, 3, fmt.Sprintf("--outbox-size=%d", queue), "--peer-cutoff=300ms", "--peer-timeout=500ms")
	c.startAll()
	var recs []*recorder
	for i := range 5 {
		recs = append(recs, subscribe(t, fmt.Sprintf("paused%d", i), c.eventsURL(2)))
	}
	recs = append(recs, subscribe(t, "other", c.eventsURL(0)))
	waitFor(t, deadline, "subscribers to connect", func() bool {
		for _, r := range recs {
			if n, _, _ := r.connections(); n == 0 {
				return false
			}
		}
		return true
	})
	pubs := []*publisher{newPublisher(c, nil, "p", 0), newPublisher(c, nil, "q", 1)}
	publishN := func(n int) { publishRounds(t, n, pubs...) }
	publishN(10)
	waitAll(t, deadline, recs, 20)

	paused := c.rep(2)
	if err := paused.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	pausedAt := time.Now()
	t.Cleanup(func() { _ = paused.Signal(syscall.SIGCONT) })
	// 100 events from each publisher at 50/s: the pause lasts about 2 s.
	var wg sync.WaitGroup
	errs := make(chan error, len(pubs))
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(t.Context(), 50, 110, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	peer := `peer="` + ipOf(2) + `"`
	waitFor(t, deadline, "both publishing replicas to cut the paused peer off", func() bool {
		return c.metric(0, "sser_peer_cutoffs_total", peer) > 0 && c.metric(1, "sser_peer_cutoffs_total", peer) > 0
	})
	cutoffs := c.metric(0, "sser_peer_cutoffs_total", peer) + c.metric(1, "sser_peer_cutoffs_total", peer)
	if err := paused.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	pause := time.Since(pausedAt)
	publishN(10)
	waitAll(t, deadline, recs, 240, pubs...)

	for _, r := range recs {
		tl := check(r.messages(), pubs...)
		if !tl.ok() {
			t.Errorf("%s: %d received, %d duplicates, %d missing, %d out of order: %q", r.name, tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
		}
		if n, res, lost := r.connections(); len(lost) > 0 {
			t.Errorf("%s: %d connections, sser-lost %q, resume headers %q", r.name, n, lost, res)
		}
	}
	repairs := c.metric(2, "sser_gap_repairs_total")
	if repairs == 0 {
		t.Error("sser_gap_repairs_total is 0 on the paused replica: the events came some other way than a repair")
	}
	t.Logf("paused %s; cut off %v times; on the paused replica: repairs %v, duplicates dropped %v, lost %v", pause.Round(time.Millisecond),
		cutoffs, repairs, c.metric(2, "sser_events_duplicate_total"), c.metric(2, "sser_events_lost_total"))
}

// A peer batch retried after its response was lost is delivered once: the
// replica drops events whose origin and seq it has already applied.
func TestRetriedBatchDeliveredOnce(t *testing.T) {
	skipShort(t)
	from := subnet + "91" // the peer that publishes origin "retried"
	c := newCluster(t, 1, peersWith(1, from))
	c.startAll()
	a := subscribe(t, "a", c.eventsURL(0))
	waitFor(t, deadline, "a to connect", func() bool { n, _, _ := a.connections(); return n == 1 })
	ev := func(seq int) map[string]any {
		return map[string]any{"stream": stream, "msg": fmt.Sprintf("o-%d", seq), "origin": "retried", "seq": seq}
	}
	sendRaw(t, c, 0, from, ev(1), ev(2), ev(3))
	sendRaw(t, c, 0, from, ev(1), ev(2), ev(3)) // the retry
	sendRaw(t, c, 0, from, ev(3), ev(4))        // overlapping the next batch
	waitFor(t, deadline, "o-4", func() bool { return slices.Contains(a.messages(), "o-4") })
	if got, want := a.messages(), names("o", 1, 5); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if n := c.metric(0, "sser_events_duplicate_total"); n != 4 {
		t.Errorf("sser_events_duplicate_total = %v, want 4", n)
	}
}

// An origin that dies after reaching some peers but not others must not
// leave the others' subscribers silently short: a loss is allowed only past
// a history limit or when no one holds the events, and then the subscriber
// is told. r0 publishes
// while r2 is paused, so r1 has the events and r0's queue to r2 holds them;
// then r0 is killed and r2 runs again. r1 still holds every event in its
// history, so r2's subscribers can get them.
func TestOriginKilledBeforeReachingAPeer(t *testing.T) {
	skipShort(t)
	c := newCluster(t, 3)
	c.startAll()
	holder := subscribe(t, "holder@r1", c.eventsURL(1))
	var victims []*recorder
	for i := range 2 {
		victims = append(victims, subscribe(t, fmt.Sprintf("victim%d@r2", i), c.eventsURL(2)))
	}
	all := append([]*recorder{holder}, victims...)
	waitFor(t, deadline, "subscribers to connect", func() bool {
		for _, r := range all {
			if n, _, _ := r.connections(); n == 0 {
				return false
			}
		}
		return true
	})
	p, q := newPublisher(c, nil, "p", 0), newPublisher(c, nil, "q", 1)
	for range 5 {
		if err := p.publishNext(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	waitAll(t, deadline, all, 5)

	paused := c.rep(2)
	if err := paused.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = paused.Signal(syscall.SIGCONT) })
	for range 10 {
		if err := p.publishNext(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	waitAll(t, deadline, []*recorder{holder}, 15)
	if err := c.rep(0).Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	_ = c.rep(0).Wait(ctx)
	if err := paused.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := q.publishNext(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	waitAll(t, 20*time.Second, all, 20, p, q)
	for _, r := range all {
		if tl := check(r.messages(), p, q); !tl.ok() {
			t.Errorf("%s: %d received, %d duplicates, %d missing, %d out of order: %q", r.name, tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
		}
	}
}
