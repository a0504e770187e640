package sser

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rangePeers answers range reads: the owner holds its origin's events from
// heldFrom on, every other peer holds all of them. onRead runs before each
// answer, to change the world while a repair pass is under way.
type rangePeers struct {
	fakePeers
	owner    string
	heldFrom uint64
	last     uint64
	onRead   func(peer string)
	mu       sync.Mutex
	reads    []string
}

func (f *rangePeers) rangeRead(_ context.Context, peer, origin string, after, upTo uint64, limit int) (*rangeAnswer, error) {
	f.mu.Lock()
	f.reads = append(f.reads, peer)
	f.mu.Unlock()
	if f.onRead != nil {
		f.onRead(peer)
	}
	ans := &rangeAnswer{Origin: origin, Last: f.last, Owner: peer == f.owner}
	from := after + 1
	if ans.Owner {
		ans.HeldFrom = f.heldFrom
		from = max(from, f.heldFrom)
	}
	for s := from; s <= min(upTo, f.last) && len(ans.Events) < limit; s++ {
		ans.Events = append(ans.Events, seqEvent("o", s))
	}
	return ans, nil
}

func (f *rangePeers) origins(context.Context, string) ([]OriginInfo, error) {
	return nil, errors.New("no notes here")
}

// A gap that grows while a repair pass is under way is asked of every peer
// again before anything is given up: the part past what the origin still
// holds may be with another peer.
func TestRepairAsksAgainWhenTheGapGrows(t *testing.T) {
	const owner, other = "127.0.0.5", "127.0.0.6"
	s, err := NewWithOptions(Options{PeerFinder: staticFinder(t, "127.0.0.9", owner, other), PodIP: "127.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	peers := &rangePeers{owner: owner, heldFrom: 25, last: 30}
	s.peers = peers
	s.bc.setPeers(t.Context(), []string{"127.0.0.9", owner, other})
	t.Cleanup(s.bc.stop)
	if err := s.book.bind("o", owner); err != nil {
		t.Fatal(err)
	}
	var first []Event
	for seq := uint64(1); seq <= 10; seq++ {
		first = append(first, seqEvent("o", seq))
	}
	s.hub.apply(append(first, seqEvent("o", 20)), "peer") // 11..19 missing
	grown := false
	peers.onRead = func(peer string) {
		// The next batch arrives while the peer that holds the gap is
		// being asked: the gap now reaches past what it was asked for.
		if peer == other && !grown {
			grown = true
			s.hub.apply([]Event{seqEvent("o", 30)}, "peer")
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for pass := 0; ; pass++ {
		if _, again := s.rep.repair(ctx, "o"); !again {
			break
		}
		if pass == 10 {
			t.Fatal("the repair did not settle in 10 passes")
		}
	}
	if lost := testutil.ToFloat64(s.m.eventsLost); lost != 0 {
		t.Errorf("%v events given up, though a peer held every one (reads %v)", lost, peers.reads)
	}
	if _, _, ok := s.hub.gap("o"); ok || s.hub.seq.origins["o"].last != 30 {
		t.Errorf("origin o at %d, want 30 with no gap", s.hub.seq.origins["o"].last)
	}
}
