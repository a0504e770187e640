package sser

import (
	"slices"
	"time"
)

// retainLocked makes e its stream's retained state when it wins over the
// current one (see Event.retainedAfter): replicas that apply concurrent
// publishers' events in different orders keep the same one. A clear stays
// as a tombstone, so an older retained event that arrives later does not
// come back.
func (h *hub) retainLocked(ss *streamState, e *histEntry) {
	if old := ss.retained; old != nil && !e.ev.retainedAfter(&old.ev) {
		return
	}
	if ss.retained == nil {
		h.m.retainedStreams.Inc()
	}
	ss.retained = e
	ss.retainedFrame = nil
	if !e.ev.clearsRetained() {
		ss.retainedFrame = appendFrame(nil, "", &e.ev)
	}
}

// appendRetainedLocked queues the retained state of a new subscriber's
// streams: its stream's, or each member's of its set in apply order.
func (h *hub) appendRetainedLocked(frames [][]byte, sub *subscriber, set *streamSet) [][]byte {
	if set == nil {
		if ss := h.streams[sub.streams[0]]; ss != nil && ss.retainedFrame != nil {
			if sub.ws != nil {
				frames = append(frames, wsEventFrame("", &ss.retained.ev))
			} else {
				frames = append(frames, ss.retainedFrame)
			}
		}
		return frames
	}
	var rs []*histEntry
	for ss := range set.members {
		if ss.retainedFrame != nil {
			rs = append(rs, ss.retained)
		}
	}
	slices.SortFunc(rs, func(a, b *histEntry) int { return cmpUint(a.idx, b.idx) })
	for _, e := range rs {
		frames = append(frames, appendSetFrame(nil, "", &e.ev, set.format))
	}
	return frames
}

// sweepRetainedLocked forgets clears of retained state that are older than
// any event still in flight could be.
func (h *hub) sweepRetainedLocked(now time.Time, age time.Duration) {
	for _, ss := range h.streams {
		if e := ss.retained; e != nil && e.ev.clearsRetained() && now.Sub(e.at) > 10*age {
			ss.retained = nil
			h.m.retainedStreams.Dec()
			if ss.idle() {
				h.forgetStreamLocked(ss)
			}
		}
	}
}

// importRetainedLocked takes a peer's retained state in warm-up.
func (h *hub) importRetainedLocked(entries []SnapshotEntry) {
	for i := range entries {
		se := &entries[i]
		if !se.Retain || se.Origin == "" || se.Event.Validate() != nil {
			continue
		}
		ss := h.streamLocked(se.Stream)
		h.retainLocked(ss, &histEntry{ev: se.Event, at: se.At})
	}
}

// retainedSnapshotLocked is the retained state to copy to a new replica.
func (h *hub) retainedSnapshotLocked() []SnapshotEntry {
	var out []SnapshotEntry
	for _, ss := range h.streams {
		if e := ss.retained; e != nil {
			out = append(out, SnapshotEntry{Event: e.ev, ID: e.pos.String(), At: e.at})
		}
	}
	return out
}
