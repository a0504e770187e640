package sser

import (
	"slices"
	"time"
)

// Snapshot is a replica's history as served to peers: to warm up a new
// replica, or (filtered to one origin and seq range) to repair a gap.
type Snapshot struct {
	// Position is the serving replica's position vector (an SSE id).
	Position string `json:"position"`
	// Origins is what the replica knows of each origin.
	Origins []OriginInfo `json:"origins"`
	// Entries are the held events in the replica's apply order.
	Entries []SnapshotEntry `json:"entries"`
	// Evicted is, per stream and origin, the highest seq that left history.
	Evicted map[string]map[string]uint64 `json:"evicted,omitempty"`
}

// OriginInfo is a replica's knowledge of one origin.
type OriginInfo struct {
	Origin   string `json:"origin"`
	Last     uint64 `json:"last"`
	Base     uint64 `json:"base,omitempty"`
	LostUpTo uint64 `json:"lostUpTo,omitempty"`
}

// SnapshotEntry is one held event with the id it was sent with.
type SnapshotEntry struct {
	Event
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// snapshot copies the history. Entries are immutable, so only the pointers
// are copied under the lock.
func (h *hub) snapshot() *Snapshot {
	h.mu.Lock()
	snap := &Snapshot{Position: h.posID}
	var entries []*histEntry
	for name, ss := range h.streams {
		for i := 0; i < ss.hist.len(); i++ {
			entries = append(entries, ss.hist.at(i))
		}
		if len(ss.evicted) > 0 {
			if snap.Evicted == nil {
				snap.Evicted = make(map[string]map[string]uint64)
			}
			m := make(map[string]uint64, len(ss.evicted))
			for o, s := range ss.evicted {
				m[o] = s
			}
			snap.Evicted[name] = m
		}
	}
	for origin, st := range h.origins {
		if st.inPosition {
			snap.Origins = append(snap.Origins, OriginInfo{Origin: origin, Last: st.last, Base: st.base, LostUpTo: st.lostUpTo})
		}
	}
	h.mu.Unlock()
	slices.SortFunc(entries, func(a, b *histEntry) int { return cmpUint(a.idx, b.idx) })
	snap.Entries = make([]SnapshotEntry, len(entries))
	for i, e := range entries {
		snap.Entries[i] = SnapshotEntry{Event: e.ev, ID: e.pos.String(), At: e.at}
	}
	return snap
}

// originRange returns the held events of origin with after < seq <= upTo,
// in seq order, and the highest seq of origin this replica has applied.
func (h *hub) originRange(origin string, after, upTo uint64) ([]Event, uint64) {
	h.mu.Lock()
	var out []Event
	for _, ss := range h.streams {
		for i := 0; i < ss.hist.len(); i++ {
			e := ss.hist.at(i)
			if e.ev.Origin == origin && e.ev.Seq > after && e.ev.Seq <= upTo {
				out = append(out, e.ev)
			}
		}
	}
	var last uint64
	if st := h.origins[origin]; st != nil {
		last = st.last
	}
	h.mu.Unlock()
	slices.SortFunc(out, func(a, b Event) int { return cmpUint(a.Seq, b.Seq) })
	return out, last
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// startWarming holds every event given to apply until finishWarming, so a
// snapshot can be imported into an empty hub first.
func (h *hub) startWarming() {
	h.mu.Lock()
	h.warming = true
	h.mu.Unlock()
}

// finishWarming imports snap (when not nil) and then applies what arrived
// meanwhile: overlaps are dropped as duplicates, and a hole between the
// snapshot and the live events is repaired like any gap.
func (h *hub) finishWarming(snap *Snapshot) error {
	h.mu.Lock()
	var err error
	if snap != nil {
		err = h.importLocked(snap)
	}
	h.warming = false
	held := h.held
	h.held = nil
	var gaps []gapRequest
	now := h.now()
	for _, b := range held {
		for _, ev := range b.events {
			if g, ok := h.applyOneLocked(ev, now, b.source); ok {
				gaps = append(gaps, g)
			}
		}
	}
	h.unlockAndFanOut()
	h.requestRepairs(gaps)
	return err
}

func (h *hub) importLocked(snap *Snapshot) error {
	pos, err := parsePosition(snap.Position)
	if err != nil {
		return err
	}
	now := h.now()
	for _, o := range snap.Origins {
		if !validOrigin(o.Origin) {
			continue
		}
		h.origins[o.Origin] = &originState{last: o.Last, base: o.Base, lostUpTo: o.LostUpTo, lastAt: now, inPosition: true}
	}
	imported := 0
	for i := range snap.Entries {
		se := &snap.Entries[i]
		if se.Event.Validate() != nil || se.Origin == "" {
			continue
		}
		epos, err := parsePosition(se.ID)
		if err != nil {
			continue
		}
		ss := h.streams[se.Stream]
		if ss == nil {
			ss = newStreamState()
			h.streams[se.Stream] = ss
		}
		h.idx++
		ev := se.Event
		ss.hist.push(&histEntry{idx: h.idx, ev: ev, pos: epos, frame: appendFrame(nil, se.ID, &ev), at: se.At})
		imported++
	}
	for name, m := range snap.Evicted {
		ss := h.streams[name]
		if ss == nil || ValidateStreamName(name) != nil {
			continue
		}
		ss.evicted = make(map[string]uint64, len(m))
		for o, s := range m {
			ss.evicted[o] = s
		}
	}
	for _, ss := range h.streams {
		ss.trim(h.historySize, h.historyAge, now)
	}
	h.pos = pos
	h.posID = pos.String()
	h.m.eventsIn.WithLabelValues("warmup").Add(float64(imported))
	return nil
}
