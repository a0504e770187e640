package sser

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"
)

// Repair budget: the pages one pass over an origin may fetch, and the
// rounds an origin that is not a live peer gets before what nobody holds is
// given up.
const (
	maxRepairPages   = 20
	deadOriginRounds = 3
	repairWorkers    = 2
	repairRetryMin   = 200 * time.Millisecond
	repairRetryMax   = 5 * time.Second
	maxOriginBook    = 1 << 16
)

// originBook records which peer address announced each origin. An origin
// is one process incarnation, so it never moves: events of an origin are
// accepted only from the address that first announced it. Each address may
// hold a bounded number of live origins (one per restart of its pod within
// the history age); an origin leaves the book when it leaves the position.
type originBook struct {
	maxPerPeer int

	mu     sync.Mutex
	owner  map[string]string   // origin -> peer IP
	byPeer map[string][]string // peer IP -> its origins, oldest first
}

func newOriginBook(maxPerPeer int) *originBook {
	return &originBook{maxPerPeer: maxPerPeer, owner: make(map[string]string), byPeer: make(map[string][]string)}
}

var (
	errOriginOwned    = errors.New("origin belongs to another peer")
	errTooManyOrigins = errors.New("peer announced too many origins")
)

// bind records that ip announced origin. It fails when another address
// did, or when ip already holds its bound of live origins.
func (b *originBook) bind(origin, ip string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.owner[origin]; ok {
		if cur != ip {
			return errOriginOwned
		}
		return nil
	}
	if len(b.byPeer[ip]) >= b.maxPerPeer || len(b.owner) >= maxOriginBook {
		return errTooManyOrigins
	}
	b.owner[origin] = ip
	b.byPeer[ip] = append(b.byPeer[ip], origin)
	return nil
}

// forget removes origin from the book: it has left the position.
func (b *originBook) forget(origin string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ip, ok := b.owner[origin]
	if !ok {
		return
	}
	delete(b.owner, origin)
	list := b.byPeer[ip]
	for i, o := range list {
		if o == origin {
			b.byPeer[ip] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(b.byPeer[ip]) == 0 {
		delete(b.byPeer, ip)
	}
}

// hint records where origin lives as a peer reported it, unless known.
func (b *originBook) hint(origin, ip string) {
	if ip == "" {
		return
	}
	_ = b.bind(origin, ip)
}

// addr is the peer address of origin, "" when unknown.
func (b *originBook) addr(origin string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.owner[origin]
}

// repairer fills the gaps of origins: a work queue keyed by origin, fed by
// seq gaps, by a sender's word that it no longer holds some events, and by
// anti-entropy. The worker looks at what the origin lacks now, fetches it
// within a page budget (from the origin first, then from peers' history),
// and fills it, gives up what cannot be had, or tries again later. Nothing
// is given up while the origin, alive in the peer set, may still hold it.
type repairer struct {
	s      *ServerImpl
	q      *workQueue
	mu     sync.Mutex
	rounds map[string]int // failed rounds per origin
}

func newRepairer(s *ServerImpl) *repairer {
	return &repairer{s: s, q: newWorkQueue(), rounds: make(map[string]int)}
}

// run serves the queue with a few workers until ctx ends.
func (r *repairer) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range repairWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				origin, ok := r.q.get(ctx)
				if !ok {
					return
				}
				retry, again := r.repair(ctx, origin)
				r.q.done(origin)
				if again {
					r.q.addAfter(origin, retry)
				}
			}
		}()
	}
	wg.Wait()
}

func (r *repairer) round(origin string, failed bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !failed {
		delete(r.rounds, origin)
		return 0
	}
	r.rounds[origin]++
	return r.rounds[origin]
}

// repair does one pass over origin's gap; it returns when to look again.
func (r *repairer) repair(ctx context.Context, origin string) (time.Duration, bool) {
	s := r.s
	after, upTo, ok := s.hub.gap(origin)
	if !ok {
		r.round(origin, false)
		return 0, false
	}
	start := after
	log := s.log.WithValues("origin", origin)
	owner := s.book.addr(origin)
	ownerAlive := owner != "" && owner != s.opts.PodIP && s.bc.isPeer(owner)
	candidates := s.otherPeers()
	rand.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	if ownerAlive {
		for i, p := range candidates {
			if p == owner {
				candidates[0], candidates[i] = candidates[i], candidates[0]
			}
		}
	}
	heldFrom := s.hub.heldFrom(origin)
	pages, filled, unanswered := 0, 0, 0
	for _, peer := range candidates {
		for pages < maxRepairPages {
			if after, upTo, ok = s.hub.gap(origin); !ok {
				break
			}
			ans, err := s.peers.rangeRead(ctx, peer, origin, after, upTo, defaultPageEvents)
			pages++
			if err != nil {
				log.V(1).Info("gap repair from peer failed", "peer", peer, "error", err.Error())
				unanswered++
				if peer == owner && errors.Is(err, syscall.ECONNREFUSED) {
					// Nothing listens where the origin lived: its process,
					// and the outbox with it, is gone.
					ownerAlive = false
				}
				break
			}
			log.V(1).Info("gap repair page", "peer", peer, "after", after, "upTo", upTo, "events", len(ans.Events), "more", ans.More, "owner", ans.Owner, "heldFrom", ans.HeldFrom, "last", ans.Last)
			if ans.Owner {
				heldFrom = max(heldFrom, ans.HeldFrom)
			} else if peer == owner {
				ownerAlive = false // another incarnation lives there now
			}
			if len(ans.Events) > 0 {
				s.hub.fill(ans.Events)
				filled += len(ans.Events)
			}
			if !ans.More {
				break
			}
		}
	}
	if after, upTo, ok = s.hub.gap(origin); !ok {
		s.m.repairs.WithLabelValues("repaired").Inc()
		log.Info("seq gap repaired", "events", filled, "pages", pages)
		r.round(origin, false)
		return 0, false
	}
	if after > start {
		// Progress, and the gap may have grown meanwhile: look again at
		// once, asking every peer about what is missing now. Only a pass
		// that moved nothing decides what to give up.
		return 0, true
	}
	switch {
	case heldFrom > after+1:
		// The origin no longer holds the start of the gap. Unless every
		// peer answered that it does not hold it either, ask again: a
		// peer that did not answer in time may still have it.
		if n := r.round(origin, unanswered > 0); n > 0 && n < deadOriginRounds && ctx.Err() == nil {
			return repairRetryMin, true
		}
		s.m.repairs.WithLabelValues("failed").Inc()
		log.Info("no peer holds what the origin no longer holds", "after", after, "heldFrom", heldFrom, "unanswered", unanswered)
		s.hub.giveUp(origin, min(heldFrom-1, upTo))
		r.round(origin, false)
		return 0, true
	case !ownerAlive:
		if n := r.round(origin, true); n >= deadOriginRounds || ctx.Err() != nil {
			// The origin is gone and no peer holds the rest of the gap.
			s.m.repairs.WithLabelValues("failed").Inc()
			log.Info("no peer holds a gap of an origin that is gone", "after", after, "upTo", upTo, "rounds", n)
			s.hub.giveUp(origin, upTo)
			r.round(origin, false)
			return 0, true
		}
		return repairRetryMin, true
	}
	// The origin is a live peer that has not answered: it still holds the
	// events, so wait for it.
	n := r.round(origin, true)
	if n == 1 || n%20 == 0 {
		log.Info("gap waits for its origin, which has not answered", "after", after, "upTo", upTo, "peer", owner, "rounds", n)
	}
	return min(repairRetryMin<<min(n, 5), repairRetryMax), true
}

// warmUp copies recent history from a ready peer, page by page, before this
// replica says it is ready, so a client that resumes here after a scale-up
// or a restart still gets what it missed. With no peer to copy from it
// starts empty.
func (s *ServerImpl) warmUp(ctx context.Context) {
	var snap *Snapshot
	var from string
	deadline := time.Now().Add(s.opts.WarmUpTimeout)
	for attempt := 0; snap == nil && time.Now().Before(deadline) && ctx.Err() == nil; attempt++ {
		candidates := s.otherPeers()
		if len(candidates) == 0 {
			break
		}
		rand.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
		warming := 0
		for _, p := range candidates {
			got, err := s.fetchSnapshot(ctx, p)
			if err == nil {
				snap, from = got, p
				break
			}
			if errors.Is(err, errPeerWarming) {
				warming++
			}
			s.log.V(1).Info("warm-up from peer failed", "peer", p, "error", err.Error())
		}
		if snap != nil || warming == len(candidates) || attempt >= 4 {
			// Every peer is starting too (a new deployment): nobody holds
			// history, so there is nothing to wait for.
			break
		}
		t := time.NewTimer(time.Duration(attempt+1) * 200 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if snap != nil {
		for _, o := range snap.Origins {
			s.book.hint(o.Origin, o.Addr)
		}
	}
	if err := s.hub.finishWarming(snap); err != nil {
		s.log.Error(err, "warm-up snapshot could not be imported", "peer", from)
		snap = nil
	}
	if snap != nil {
		s.log.Info("warmed up from peer", "peer", from, "events", len(snap.Entries), "origins", len(snap.Origins))
		s.m.warmups.WithLabelValues("copied").Inc()
	} else {
		s.log.Info("no peer history to warm up from; starting empty")
		s.m.warmups.WithLabelValues("empty").Inc()
	}
	s.setWarm()
}

// fetchSnapshot reads a peer's whole history page by page. Each page
// carries the peer's position and notes as of that page, so the last one
// describes every entry before it.
func (s *ServerImpl) fetchSnapshot(ctx context.Context, peer string) (*Snapshot, error) {
	var all *Snapshot
	after := uint64(0)
	for pages := 0; ; pages++ {
		page, err := s.peers.snapshotPage(ctx, peer, after, maxPageEvents)
		if err != nil {
			return nil, err
		}
		if all == nil {
			all = page
		} else {
			all.Entries = append(all.Entries, page.Entries...)
			all.Position, all.Origins, all.Evicted = page.Position, page.Origins, page.Evicted
		}
		if !page.More || page.Next <= after || pages > 1000 {
			return all, nil
		}
		after = page.Next
	}
}
