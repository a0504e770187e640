package sser

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

// selectWS makes sub a WebSocket subscriber of streams (sorted, no
// repeats): its frames are WebSocket event messages, which name their
// stream, so several streams make a set of their own format, apart from
// SSE subscribers of the same streams. Call it before subscribing, or
// under the hub's lock.
func (sub *subscriber) selectWS(streams []string) {
	sub.streams, sub.format = streams, formatWS
	sub.key, sub.patterns, sub.allow = "", nil, nil
	if len(streams) > 1 {
		sub.key = setKey(streams, nil, formatWS, "")
	}
}

// resubscribe changes a WebSocket subscriber's streams to streams (sorted,
// no repeats), atomically with respect to apply, and queues a subscribed
// message with the id that covers them. It reports false when sub is no
// longer subscribed.
//
// Streams it keeps continue exactly: sub joins its new set (or single
// stream) before it leaves the old one, with the hub's lock held
// throughout, and leaving a single stream waits out its fan-out in
// progress, so no event applied to them is missed or sent twice. Streams
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
	oldSet, oldStream := sub.set, sub.single()
	sub.selectWS(streams)
	var set *streamSet
	if sub.multi() {
		set = h.setLocked(sub)
	}
	same := set == oldSet && (set != nil || streams[0] == oldStream)
	if !same {
		h.addLocked(sub, set)
		h.leaveLocked(sub, oldSet, oldStream)
	}
	var pos position
	if set != nil {
		pos = set.pos
	} else {
		// A subscriber of one stream is served under that stream's fan-out
		// lock, not the hub's: hold it so that an event being fanned out
		// now is queued before the id that claims it, and sub.ahead is not
		// being moved meanwhile.
		ss := h.streams[streams[0]]
		ss.fanMu.Lock()
		defer ss.fanMu.Unlock()
		pos = ss.pos
	}
	id := pos.merge(sub.ahead).withHoles(sub.lacks).String()
	if id == "" {
		id = nothingPosition(h.self).String()
	}
	sub.pushUnbounded(wsSubscribedFrame(streams, id, ""))
	return true
}
