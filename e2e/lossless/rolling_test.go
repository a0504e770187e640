package lossless

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// A rolling restart under continuous publishing. Three replicas,
// three publishers (one per replica, moving to another while theirs is not
// ready, as through a Service) at 135 events/s in all (at least 100 under -race on two busy cores), 30 subscribers on the
// Go client through the balancer. Each replica in turn gets SIGTERM, drains
// over 2 s, exits, starts again on the same address and ports and warms up.
// Every subscriber must end with every event exactly once, in per-origin
// order.
func TestRollingRestart(t *testing.T) {
	skipShort(t)
	const (
		nSubs = 30
		rate  = 45.0 // events/s per publisher
	)
	c := newCluster(t, 3)
	c.startAll()
	b := newBalancer(t, c)
	b.waitReady(t, 0, 1, 2)

	recs := subscribeAll(t, b, nSubs)

	pubs := []*publisher{newPublisher(c, b, "a", 0), newPublisher(c, b, "b", 1), newPublisher(c, b, "c", 2)}
	stop := make(chan struct{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(pubs))
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(ctx, rate, 12000, stop); err != nil {
				errs <- err
			}
		}()
	}
	stopPublishing := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopPublishing()
	sentAll := func() int {
		n := 0
		for _, p := range pubs {
			n += p.sent()
		}
		return n
	}
	pubStart := time.Now()
	waitFor(t, deadline, "a second of publishing before the rollout", func() bool { return sentAll() >= int(3*rate) })

	rollStart := time.Now()
	var steps []string
	for i := range 3 {
		stepStart := time.Now()
		stopped := c.stop(i)
		c.start(i) // waits for /readyz, so for warm-up
		b.waitReady(t, i)
		steps = append(steps, fmt.Sprintf("r%d: exit %s, ready again %s", i, stopped.Round(time.Millisecond), time.Since(stepStart).Round(time.Millisecond)))
	}
	rollout := time.Since(rollStart)
	before := sentAll()
	waitFor(t, deadline, "a second of publishing after the rollout", func() bool { return sentAll() >= before+int(3*rate) })
	stopPublishing()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	published := sentAll()
	took := time.Since(pubStart)
	t.Logf("published %d events in %s (%.0f events/s) from %d publishers", published, took.Round(time.Millisecond), float64(published)/took.Seconds(), len(pubs))

	waitAll(t, deadline, recs, published, pubs...)

	minRecv, maxRecv, dups, missing, disorder, cross, reconnects := published*10, 0, 0, 0, 0, 0, 0
	resumes := map[string]int{}
	lostEvents := 0
	for _, r := range recs {
		tl := check(r.messages(), pubs...)
		minRecv, maxRecv = min(minRecv, tl.received), max(maxRecv, tl.received)
		dups += tl.dups
		missing += tl.missing
		disorder += tl.disorder
		cross += tl.crossOrigin
		if !tl.ok() {
			t.Errorf("%s: %d received, %d duplicates, %d missing, %d out of origin order: %q", r.name, tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
		}
		n, res, lost := r.connections()
		reconnects += n - 1
		for _, h := range res {
			if h != "" {
				resumes[h]++
			}
		}
		lostEvents += len(lost)
	}
	if lostEvents > 0 || resumes["lost"] > 0 {
		t.Errorf("%d sser-lost events and %d lost resumes; the history holds everything this test needs", lostEvents, resumes["lost"])
	}
	moves := 0
	for _, p := range pubs {
		segs := p.segments()
		for k := 1; k < len(segs); k++ {
			if segs[k] != segs[k-1] {
				moves++
			}
		}
	}
	var lostOnReplicas float64
	for i := range 3 {
		lostOnReplicas += c.metric(i, "sser_events_lost_total")
	}
	t.Logf("rolling restart of 3 replicas took %s (%s)", rollout.Round(time.Millisecond), strings.Join(steps, "; "))
	t.Logf("events published %d; received per subscriber min %d max %d (%d subscribers); duplicates %d; missing %d; out of origin order %d",
		published, minRecv, maxRecv, nSubs, dups, missing, disorder)
	t.Logf("reconnects %d, resumes %v; publisher moves between replicas %d, swapped across origins %d; sser_events_lost_total on the final replicas %v",
		reconnects, resumes, moves, cross, lostOnReplicas)
}
