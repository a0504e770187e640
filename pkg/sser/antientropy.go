package sser

import (
	"context"
	"math/rand/v2"
	"net/http"
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
	writeJSON(w, http.StatusOK, originsAnswer{Origins: s.hub.originInfos()})
}

// antiEntropy compares notes with one random peer every interval and
// repairs what that peer holds of an origin that has gone quiet here. Seq
// gaps catch what is lost on the way while an origin keeps publishing; this
// catches the tail of an origin that stopped (died) before every peer had
// its last events.
func (s *ServerImpl) antiEntropy(ctx context.Context) {
	interval := s.opts.AntiEntropyInterval
	every(ctx, interval, func() {
		peers := s.otherPeers()
		if !s.warm.Load() || len(peers) == 0 {
			return
		}
		peer := peers[rand.N(len(peers))]
		var ans originsAnswer
		if err := s.getJSON(ctx, s.peerURL(peer, OriginsURLPath, nil), &ans); err != nil {
			s.log.V(1).Info("anti-entropy: peer did not answer", "peer", peer, "error", err.Error())
			return
		}
		gaps := s.hub.divergence(ans.Origins, s.origin, 2*interval)
		for _, g := range gaps {
			s.log.Info("anti-entropy: a peer holds events of a quiet origin that this replica lacks; fetching them",
				"peer", peer, "origin", g.origin, "after", g.after, "upTo", g.upTo)
			s.m.repairs.WithLabelValues("anti_entropy").Inc()
		}
		s.hub.requestRepairs(gaps)
	})
}
