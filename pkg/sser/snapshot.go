package sser

import (
	"time"
)

// Snapshot is a page of a replica's history as served to peers: to warm up
// a new replica, page by page in apply order.
type Snapshot struct {
	// Position is the serving replica's position vector (an SSE id).
	Position string `json:"position"`
	// Origins is what the replica knows of each origin.
	Origins []OriginInfo `json:"origins"`
	// Entries are held events in the replica's apply order.
	Entries []SnapshotEntry `json:"entries"`
	// Evicted is, per stream and origin, the highest seq that left history.
	Evicted map[string]map[string]uint64 `json:"evicted,omitempty"`
	// Streams is each stream's position (the id its next event builds on):
	// the origins that published to it within the history age.
	Streams map[string]string `json:"streams,omitempty"`
	// Retained is every stream's retained event (or clear), on the last page.
	Retained []SnapshotEntry `json:"retained,omitempty"`
	// More is true when entries past this page are held; Next is the apply
	// index to ask for them after.
	More bool   `json:"more,omitempty"`
	Next uint64 `json:"next,omitempty"`
}

// OriginInfo is a replica's knowledge of one origin.
type OriginInfo struct {
	Origin string `json:"origin"`
	Last   uint64 `json:"last"`
	Base   uint64 `json:"base,omitempty"`
	// LostFrom and LostUpTo are the range given up as lost here (the hole
	// in the position), when there is one.
	LostFrom uint64 `json:"lostFrom,omitempty"`
	LostUpTo uint64 `json:"lostUpTo,omitempty"`
	// Addr is the peer address the origin's events came from.
	Addr string `json:"addr,omitempty"`
}

// SnapshotEntry is one held event with the id it was sent with.
type SnapshotEntry struct {
	Event
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// snapshotPage copies up to limit history entries past apply index after.
// Entries are immutable, so only pointers are taken under the lock.
func (h *hub) snapshotPage(after uint64, limit int) *Snapshot {
	h.mu.Lock()
	snap := &Snapshot{Position: h.pos.String(), Origins: h.originInfosLocked()}
	entries, more := h.hist.all.after(after, ^uint64(0), limit)
	if !more {
		snap.Retained = h.retainedSnapshotLocked()
		for name, ss := range h.streams {
			if len(ss.pos) > 0 {
				if snap.Streams == nil {
					snap.Streams = make(map[string]string)
				}
				snap.Streams[name] = ss.pos.String()
			}
			if len(ss.evicted) == 0 {
				continue
			}
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
	h.mu.Unlock()
	snap.Entries = make([]SnapshotEntry, len(entries))
	for i, e := range entries {
		snap.Entries[i] = SnapshotEntry{Event: e.ev, ID: e.pos.String(), At: e.at}
	}
	if more {
		snap.More, snap.Next = true, entries[len(entries)-1].idx
	}
	return snap
}

// originRange returns up to limit held events of origin with after < seq
// <= upTo, in seq order, whether more follow, and the highest seq of origin
// this replica has applied.
func (h *hub) originRange(origin string, after, upTo uint64, limit int) ([]Event, bool, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	events, more := h.hist.originRange(origin, after, upTo, limit)
	var last uint64
	if st := h.seq.origins[origin]; st != nil {
		last = st.last
	}
	return events, more, last
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
	var gaps []string
	for _, b := range held {
		gaps = append(gaps, h.applyLocked(b.events, b.source, b.heldFrom)...)
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
		h.seq.origins[o.Origin] = &originState{last: o.Last, base: o.Base, lastAt: now, inPosition: true}
		if o.LostUpTo > o.LostFrom {
			pos = pos.withHole(o.Origin, o.LostFrom, min(o.LostUpTo, o.Last))
			h.seq.origins[o.Origin].lostAt = now
		}
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
		ss := h.streamLocked(se.Stream)
		h.idx++
		ev := se.Event
		e := &histEntry{idx: h.idx, ev: ev, pos: epos, at: se.At}
		if !ev.clearsRetained() {
			e.frame = appendFrame(nil, se.ID, &ev)
		}
		h.hist.add(ss, e)
		// A peer that writes one position for all streams sends it as each
		// entry's id: the stream keeps only the origins seen on it.
		if e := epos.entry(ev.Origin); e.seq > 0 {
			ss.pos = ss.pos.set(e)
		}
		if ss.seen == nil {
			ss.seen = make(map[string]time.Time)
		}
		if se.At.After(ss.seen[ev.Origin]) {
			ss.seen[ev.Origin] = se.At
		}
		imported++
	}
	for name, id := range snap.Streams {
		spos, err := parsePosition(id)
		if err != nil || ValidateStreamName(name) != nil || len(spos) == 0 {
			continue
		}
		ss := h.streamLocked(name)
		ss.pos = ss.pos.merge(spos)
		if ss.seen == nil {
			ss.seen = make(map[string]time.Time)
		}
		for _, e := range spos {
			if _, ok := ss.seen[e.origin]; !ok {
				ss.seen[e.origin] = now
			}
		}
	}
	for name, m := range snap.Evicted {
		ss := h.streams[name]
		if ss == nil || ValidateStreamName(name) != nil {
			continue
		}
		if ss.evicted == nil {
			ss.evicted = make(map[string]uint64, len(m))
		}
		for o, s := range m {
			ss.evicted[o] = max(ss.evicted[o], s)
		}
	}
	h.importRetainedLocked(snap.Retained)
	h.hist.expire(now)
	h.pos = pos
	for _, ss := range h.streams {
		if ss.idle() {
			h.forgetStreamLocked(ss)
		}
	}
	h.m.eventsIn.WithLabelValues("warmup").Add(float64(imported))
	return nil
}
