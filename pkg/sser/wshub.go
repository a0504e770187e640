package sser

import (
	"slices"
	"strings"
)

// The hub's side of WebSocket subscribers: their frames are encoded as
// WebSocket messages, and their streams can change while connected.

// frameFor is e's frame as sub's transport writes it. An entry applied
// while its stream had no WebSocket subscriber (a replay) is encoded on
// demand, and not kept: entries are read under different locks.
func (e *histEntry) frameFor(sub *subscriber) []byte {
	if sub.ws == nil {
		return e.frame
	}
	if e.ws != nil {
		return *e.ws
	}
	return wsEventFrame(e.pos.String(), &e.ev)
}

// encode is ev with id as sub's transport writes it.
func (sub *subscriber) encode(id string, ev *Event) []byte {
	if sub.ws != nil {
		return wsEventFrame(id, ev)
	}
	return appendFrame(nil, id, ev)
}

// lostFrame is an sser-lost notice for sub.
func (sub *subscriber) lostFrame(n lostNotice) []byte {
	if sub.ws != nil {
		return wsLostFrame(n)
	}
	return lostFrame(n)
}

// idFrame ends the connect preamble: the id that covers the subscription
// (an id-only SSE frame; a WebSocket subscribed message, which also says
// how a resume went).
func (sub *subscriber) idFrame(id string, res resumeResult) []byte {
	if sub.ws == nil {
		return appendIDFrame(nil, id)
	}
	resume := ""
	if res.resumed {
		resume = "exact"
		if res.lost {
			resume = "lost"
		}
	}
	return wsSubscribedFrame(sub.streams, id, resume)
}

// wsKey names a WebSocket subscriber's set of streams: apart from SSE
// subscribers of the same set, whose shared frames are encoded for SSE.
func wsKey(streams []string) string { return "\x01" + strings.Join(streams, "\x00") }

// resubscribe changes a WebSocket subscriber's streams to streams (sorted,
// no repeats), atomically with respect to apply, and queues a subscribed
// message with the id that covers them. It reports false when sub is no
// longer subscribed.
//
// Streams it keeps continue exactly: sub leaves a registry only to join
// another (single to several streams, or back) with the hub's lock held
// throughout, so no event applied to them is missed or sent twice. Streams
// it adds start live, at the connection's position: the id after the
// change claims everything they had before it, as a new subscription's
// first id does. An id is the position of one set of streams, so the
// client's last id keeps resuming exactly whatever the set it now has.
func (h *hub) resubscribe(sub *subscriber, streams []string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sub]; !ok || h.closed {
		return false
	}
	old := sub.streams
	wasMulti, isMulti := len(old) > 1, len(streams) > 1
	stays := func(name string, in []string) bool {
		_, found := slices.BinarySearch(in, name)
		return found && wasMulti == isMulti
	}
	for _, name := range old {
		if !stays(name, streams) {
			_, kept := slices.BinarySearch(streams, name)
			h.leaveStreamLocked(sub, name, wasMulti, !kept)
		}
	}
	sub.streams, sub.key = streams, wsKey(streams)
	for _, name := range streams {
		if !stays(name, old) {
			h.joinStreamLocked(sub, name, isMulti)
		}
	}
	// A subscriber of one stream is served under that stream's fan-out
	// lock, not the hub's: hold it so that an event being fanned out now
	// is queued before the id that claims it, and sub.ahead is not being
	// moved meanwhile.
	if !isMulti && len(streams) == 1 {
		if ss := h.streams[streams[0]]; ss != nil {
			ss.fanMu.Lock()
			defer ss.fanMu.Unlock()
		}
	}
	id := h.streamsPosLocked(streams).merge(sub.ahead).withHoles(sub.lacks).String()
	if id == "" {
		id = nothingPosition(h.self).String()
	}
	sub.pushUnbounded(wsSubscribedFrame(streams, id, ""))
	return true
}
