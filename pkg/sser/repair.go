package sser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// maxSnapshotBytes bounds a warm-up or repair answer read from a peer.
const maxSnapshotBytes = 512 << 20

// warmingHeader marks a history answer from a replica still warming up.
const warmingHeader = "X-Sser-Warming"

var errPeerWarming = errors.New("sser: peer is warming up")

// rangeAnswer is the history endpoint's answer for one origin's seq range.
type rangeAnswer struct {
	Origin string  `json:"origin"`
	Last   uint64  `json:"last"`
	Events []Event `json:"events"`
}

// noteOrigins remembers which peer IP the events of each origin came from,
// so a gap is repaired from the origin's own history first.
func (s *ServerImpl) noteOrigins(peerIP string, events []Event) {
	if net.ParseIP(peerIP) == nil {
		return
	}
	s.originMu.Lock()
	for i := range events {
		if o := events[i].Origin; o != "" && s.originAddr[o] != peerIP {
			s.originAddr[o] = peerIP
		}
	}
	s.originMu.Unlock()
}

// repairCandidates lists where a gap of origin can be fetched: the origin's
// replica first, then every other peer in random order.
func (s *ServerImpl) repairCandidates(origin string) []string {
	s.originMu.Lock()
	first := s.originAddr[origin]
	s.originMu.Unlock()
	peers := s.bc.currentPeers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	out := make([]string, 0, len(peers))
	if first != "" && first != s.opts.PodIP {
		out = append(out, first)
	}
	for _, p := range peers {
		if p != first && p != s.opts.PodIP {
			out = append(out, p)
		}
	}
	return out
}

// startRepair fetches a gap's events from a peer in the background. The
// hub holds the events after the gap meanwhile; what no peer holds is
// given up (counted as lost) so delivery goes on.
func (s *ServerImpl) startRepair(g gapRequest) {
	if !s.background(func() { s.repair(s.bgCtx, g) }) {
		s.hub.giveUp(g.origin, g.upTo)
	}
}

// background runs fn in a goroutine that stopping the server waits for;
// false (fn not run) once the server is stopping.
func (s *ServerImpl) background(fn func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.bgStopped {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		fn()
	}()
	return true
}

func (s *ServerImpl) repair(ctx context.Context, g gapRequest) {
	log := s.log.WithValues("origin", g.origin, "after", g.after, "upTo", g.upTo)
	log.V(1).Info("repairing a seq gap")
	backoff := 200 * time.Millisecond
	for round := 0; round < 4; round++ {
		for _, peer := range s.repairCandidates(g.origin) {
			ans, err := s.fetchRange(ctx, peer, g)
			if err != nil {
				log.V(1).Info("gap repair from peer failed", "peer", peer, "error", err.Error())
				continue
			}
			if ans.Last < g.upTo {
				continue // that peer has not got that far either
			}
			s.hub.fill(ans.Events)
			s.hub.giveUp(g.origin, g.upTo)
			s.m.repairs.WithLabelValues("repaired").Inc()
			log.Info("seq gap repaired", "peer", peer, "events", len(ans.Events))
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			s.hub.giveUp(g.origin, g.upTo)
			return
		case <-t.C:
		}
		backoff *= 2
	}
	s.m.repairs.WithLabelValues("failed").Inc()
	log.Info("no peer could repair a seq gap")
	s.hub.giveUp(g.origin, g.upTo)
}

func (s *ServerImpl) peerURL(ip, path string, q url.Values) string {
	u := "http://" + net.JoinHostPort(ip, strconv.Itoa(s.opts.PeerPort)) + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (s *ServerImpl) fetchRange(ctx context.Context, peer string, g gapRequest) (*rangeAnswer, error) {
	q := url.Values{"origin": {g.origin}, "after": {strconv.FormatUint(g.after, 10)}, "upTo": {strconv.FormatUint(g.upTo, 10)}}
	var ans rangeAnswer
	if err := s.getJSON(ctx, s.peerURL(peer, HistoryURLPath, q), &ans); err != nil {
		return nil, err
	}
	for i := range ans.Events {
		ev := &ans.Events[i]
		if ev.Validate() != nil || ev.Origin != g.origin || ev.Seq <= g.after || ev.Seq > g.upTo {
			return nil, fmt.Errorf("peer %s answered an event outside the range asked", peer)
		}
	}
	return &ans, nil
}

func (s *ServerImpl) getJSON(ctx context.Context, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.PeerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if s.opts.PodIP != "" {
		req.Header.Set(PeerHeader, s.opts.PodIP)
	}
	s.setAuth(req)
	resp, err := s.bc.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(warmingHeader) != "" {
		return errPeerWarming
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, maxSnapshotBytes)).Decode(v)
}

// warmUp copies recent history from a ready peer before this replica says
// it is ready, so a client that resumes here after a scale-up or a restart
// still gets what it missed. With no peer to copy from it starts empty.
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
			var got Snapshot
			err := s.getJSON(ctx, s.peerURL(p, HistoryURLPath, nil), &got)
			if err == nil {
				snap, from = &got, p
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

// serveHistory answers peers: with origin, after and upTo, that origin's
// held events in the range; without, a snapshot of everything held.
// A replica still warming up answers 503: it has nothing reliable to give.
func (s *ServerImpl) serveHistory(w http.ResponseWriter, r *http.Request) {
	if !s.warm.Load() {
		w.Header().Set(warmingHeader, "1")
		s.writeError(w, r, "history", http.StatusServiceUnavailable, "warming up", "")
		return
	}
	q := r.URL.Query()
	if origin := q.Get("origin"); origin != "" {
		after, err1 := strconv.ParseUint(q.Get("after"), 10, 64)
		upTo, err2 := strconv.ParseUint(q.Get("upTo"), 10, 64)
		if !validOrigin(origin) || err1 != nil || err2 != nil || upTo < after {
			s.writeError(w, r, "history", http.StatusBadRequest, "want origin=[A-Za-z0-9_]{1,32}, after and upTo as integers with after <= upTo", "")
			return
		}
		events, last := s.hub.originRange(origin, after, upTo)
		writeJSON(w, http.StatusOK, rangeAnswer{Origin: origin, Last: last, Events: events})
		return
	}
	writeJSON(w, http.StatusOK, s.hub.snapshot())
}
