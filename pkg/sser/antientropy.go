package sser

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
)

// OriginsURLPath serves what this replica knows of each origin (the last
// seq applied), for peers comparing notes.
const OriginsURLPath = "/api/json/v1/origins"

// originsAnswer is the origins endpoint's answer.
type originsAnswer struct {
	Origins []OriginInfo `json:"origins"`
}

func (s *ServerImpl) serveOrigins(w http.ResponseWriter, r *http.Request) {
	if !s.warm.Load() {
		w.Header().Set(warmingHeader, "1")
		s.writeError(w, r, "origins", http.StatusServiceUnavailable, "warming up", "")
		return
	}
	writeJSON(w, http.StatusOK, originsAnswer{Origins: s.originInfos()})
}

// originInfos is the hub's notes with where each origin lives.
func (s *ServerImpl) originInfos() []OriginInfo {
	infos := s.hub.originInfos()
	for i := range infos {
		if infos[i].Origin == s.origin {
			infos[i].Addr = s.opts.PodIP
		} else {
			infos[i].Addr = s.book.addr(infos[i].Origin)
		}
	}
	return infos
}

// antiEntropy compares notes with one random peer every interval and queues
// a repair for each origin of which that peer holds events this replica
// lacks and has not heard of lately. Seq gaps catch what is lost on the way
// while an origin keeps publishing; this catches the tail of an origin that
// stopped (died) before every peer had its last events.
func (s *ServerImpl) antiEntropy(ctx context.Context) {
	interval := s.opts.AntiEntropyInterval
	every(ctx, interval, func() {
		peers := s.otherPeers()
		if !s.warm.Load() || len(peers) == 0 {
			return
		}
		peer := peers[rand.N(len(peers))]
		infos, err := s.peers.origins(ctx, peer)
		if err != nil {
			s.log.V(1).Info("anti-entropy: peer did not answer", "peer", peer, "error", err.Error())
			return
		}
		if len(infos) > maxOriginBook {
			infos = infos[:maxOriginBook]
		}
		for _, info := range infos {
			s.book.hint(info.Origin, info.Addr)
		}
		for _, origin := range s.hub.divergence(infos, s.origin, 2*interval) {
			s.log.Info("anti-entropy: a peer holds events of a quiet origin that this replica lacks; fetching them",
				"peer", peer, "origin", origin)
			s.m.repairs.WithLabelValues("anti_entropy").Inc()
			s.rep.q.add(origin)
		}
	})
}

// serveHistory answers peers, page by page: with origin, after and upTo,
// that origin's held events in the range (from the outbox when it is this
// replica's own); without, a page of everything held past apply index
// after. A replica still warming up answers 503: it has nothing reliable
// to give. At most two snapshot pages are built at once.
func (s *ServerImpl) serveHistory(w http.ResponseWriter, r *http.Request) {
	if !s.warm.Load() {
		w.Header().Set(warmingHeader, "1")
		s.writeError(w, r, "history", http.StatusServiceUnavailable, "warming up", "")
		return
	}
	q := r.URL.Query()
	limit := defaultPageEvents
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			s.writeError(w, r, "history", http.StatusBadRequest, "limit must be a positive integer", "")
			return
		}
		limit = min(n, maxPageEvents)
	}
	after, err := strconv.ParseUint(q.Get("after"), 10, 64)
	if q.Get("after") == "" {
		after, err = 0, nil
	}
	if err != nil {
		s.writeError(w, r, "history", http.StatusBadRequest, "after must be an integer", "")
		return
	}
	if origin := q.Get("origin"); origin != "" {
		upTo, err := strconv.ParseUint(q.Get("upTo"), 10, 64)
		if !validOrigin(origin) || err != nil || upTo < after {
			s.writeError(w, r, "history", http.StatusBadRequest, "want origin=[A-Za-z0-9_]{1,32}, after and upTo as integers with after <= upTo", "")
			return
		}
		ans := rangeAnswer{Origin: origin}
		if origin == s.origin {
			var heldFrom uint64
			ans.Events, heldFrom, ans.Last = s.out.read(after, upTo, limit+1)
			ans.Owner, ans.HeldFrom = true, heldFrom
			if len(ans.Events) > limit {
				ans.Events, ans.More = ans.Events[:limit], true
			}
		} else {
			ans.Events, ans.More, ans.Last = s.hub.originRange(origin, after, upTo, limit)
		}
		writeJSON(w, http.StatusOK, ans)
		return
	}
	select {
	case s.snapshots <- struct{}{}:
		defer func() { <-s.snapshots }()
	default:
		s.writeError(w, r, "history", http.StatusServiceUnavailable, "too many history reads at once; retry", "")
		return
	}
	snap := s.hub.snapshotPage(after, limit)
	for i := range snap.Origins {
		if snap.Origins[i].Origin == s.origin {
			snap.Origins[i].Addr = s.opts.PodIP
		} else {
			snap.Origins[i].Addr = s.book.addr(snap.Origins[i].Origin)
		}
	}
	writeJSON(w, http.StatusOK, snap)
}
