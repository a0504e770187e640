package sser

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// maxPendingPerOrigin bounds the events held back behind a gap while it is
// repaired. Past it the gap is given up (counted as lost) so memory stays bounded.
const maxPendingPerOrigin = 10000

// originState is what this replica knows of one origin.
type originState struct {
	// last is the highest seq applied; every seq up to it is applied or lost.
	last uint64
	// base: this replica never knew the seqs at or below it that it did not
	// apply (it first heard of the origin after them). A client resuming from
	// below base may have missed events, and is told so.
	base uint64
	// lostUpTo is the highest seq given up as lost on this replica.
	lostUpTo uint64
	lastAt   time.Time
	// pending holds events that arrived after a gap, until it is repaired.
	pending map[uint64]Event
	// repairing is the end of the gap being repaired, 0 when none.
	repairing uint64
	// inPosition is false once the origin has been idle longer than the
	// history age and dropped from ids.
	inPosition bool
}

// gapRequest asks for the events (after, upTo] of an origin.
type gapRequest struct {
	origin      string
	after, upTo uint64
}

// hub holds the streams and subscribers of one replica and applies events in
// per-origin order. Sequencing is serialized (one mutex): the position vector
// after each event is then well defined and identical for all subscribers, so
// each frame is encoded once. Queueing the frame to a stream's subscribers is
// sharded by stream (streamState.fanMu) and runs after the hub's lock is
// released; only subscribers of several streams are served under it, since
// their frames must follow one apply order across streams. Writing to
// sockets happens in each subscriber's own writer, outside both.
type hub struct {
	log         logr.Logger
	m           *metrics
	historySize int
	historyAge  time.Duration
	now         func() time.Time
	// repair, when set, is asked (outside the lock) to fetch a gap's events
	// and to call fill or giveUp. Without it gaps are given up at once.
	repair func(gapRequest)

	mu       sync.Mutex
	streams  map[string]*streamState
	origins  map[string]*originState
	pos      position
	posID    string
	idx      uint64
	subs     map[*subscriber]struct{}
	draining bool
	drainEnd time.Time
	closed   bool
	// fanout is the delivery work to do for single-stream subscribers once
	// the lock is released (see unlockAndFanOut).
	fanout []fanItem
	// warming holds applied events in held until the warm-up snapshot is in.
	warming bool
	held    []heldBatch
}

type fanItem struct {
	ss *streamState
	e  *histEntry
}

type heldBatch struct {
	events []Event
	source string
}

func newHub(log logr.Logger, m *metrics, historySize int, historyAge time.Duration) *hub {
	return &hub{
		log:         log,
		m:           m,
		historySize: historySize,
		historyAge:  historyAge,
		now:         time.Now,
		streams:     make(map[string]*streamState),
		origins:     make(map[string]*originState),
		subs:        make(map[*subscriber]struct{}),
	}
}

// apply delivers events to this replica's subscribers and history. Events
// with an origin are applied in seq order: duplicates are dropped, and an
// event past a gap waits for the gap to be repaired.
func (h *hub) apply(events []Event, source string) {
	var gaps []gapRequest
	h.mu.Lock()
	if h.warming {
		h.held = append(h.held, heldBatch{events: events, source: source})
		h.mu.Unlock()
		return
	}
	now := h.now()
	for i := range events {
		if g, ok := h.applyOneLocked(events[i], now, source); ok {
			gaps = append(gaps, g)
		}
	}
	h.unlockAndFanOut()
	h.requestRepairs(gaps)
}

// unlockAndFanOut releases the hub's lock and delivers what the locked
// section applied to single-stream subscribers. The streams' fan-out locks
// are taken before the hub's lock is released, so each stream still sees
// its events in apply order, but the work per subscriber (the bulk of the
// delivery) runs without the hub's lock: other streams apply and fan out
// meanwhile.
func (h *hub) unlockAndFanOut() {
	items := h.fanout
	h.fanout = nil
	if len(items) == 0 {
		h.mu.Unlock()
		return
	}
	var held []*streamState
	for _, it := range items {
		if !slices.Contains(held, it.ss) {
			it.ss.fanMu.Lock()
			held = append(held, it.ss)
		}
	}
	h.mu.Unlock()
	var overflow []*subscriber
	queued := 0
	for _, it := range items {
		for sub := range it.ss.subs {
			if q, ok := h.pushTo(sub, it.e); !ok {
				overflow = append(overflow, sub)
			} else {
				queued += q
			}
		}
	}
	for _, ss := range held {
		ss.fanMu.Unlock()
	}
	h.m.framesQueued.Add(float64(queued))
	if len(overflow) > 0 {
		h.mu.Lock()
		for _, sub := range overflow {
			h.overflowLocked(sub)
		}
		h.mu.Unlock()
	}
}

// pushTo queues e's frame to sub: the count queued (0 when the client
// already has e), and false when sub's queue is full. sub.ahead is only
// touched by the one goroutine serving sub's stream at a time.
func (h *hub) pushTo(sub *subscriber, e *histEntry) (int, bool) {
	frame := e.frame
	if sub.ahead != nil {
		var ok bool
		if frame, ok = aheadFrame(sub, e); !ok {
			return 0, true
		}
	}
	if !sub.push(frame) {
		return 0, false
	}
	return 1, true
}

func (h *hub) overflowLocked(sub *subscriber) {
	if _, ok := h.subs[sub]; !ok {
		return
	}
	h.m.subscriberClosed.WithLabelValues(reasonOverflow.String()).Inc()
	h.log.V(1).Info("subscriber fell behind its queue, disconnecting it", "streams", sub.streams, "queue", sub.maxQueue)
	h.removeLocked(sub, reasonOverflow)
}

func (h *hub) requestRepairs(gaps []gapRequest) {
	for _, g := range gaps {
		if h.repair != nil {
			h.repair(g)
		} else {
			h.giveUp(g.origin, g.upTo)
		}
	}
}

func (h *hub) applyOneLocked(ev Event, now time.Time, source string) (gapRequest, bool) {
	if h.closed {
		return gapRequest{}, false
	}
	if ev.Origin == "" {
		// Seed format: delivered live to this replica only, with no id and no
		// history, since no other replica can know of it.
		h.m.applied(source).Inc()
		h.deliverLocked(&histEntry{ev: ev, frame: encodeFrame("", &ev)}, false)
		return gapRequest{}, false
	}
	st := h.origins[ev.Origin]
	if st == nil {
		st = &originState{last: ev.Seq - 1, base: ev.Seq - 1}
		h.origins[ev.Origin] = st
	}
	st.lastAt = now
	switch {
	case ev.Seq <= st.last:
		h.m.eventsDuplicate.Inc()
		return gapRequest{}, false
	case ev.Seq > st.last+1:
		if _, dup := st.pending[ev.Seq]; dup {
			h.m.eventsDuplicate.Inc()
			return gapRequest{}, false
		}
		if st.pending == nil {
			st.pending = make(map[uint64]Event)
		}
		st.pending[ev.Seq] = ev
		if len(st.pending) > maxPendingPerOrigin {
			h.log.Info("gap not repaired in time, giving it up", "origin", ev.Origin, "after", st.last, "held", len(st.pending))
			h.giveUpLocked(ev.Origin, st, ev.Seq-1)
			return gapRequest{}, false
		}
		if st.repairing == 0 {
			st.repairing = ev.Seq - 1
			return gapRequest{origin: ev.Origin, after: st.last, upTo: ev.Seq - 1}, true
		}
		return gapRequest{}, false
	}
	h.m.applied(source).Inc()
	h.applyInOrderLocked(st, ev, now)
	h.drainPendingLocked(st, now)
	return gapRequest{}, false
}

func (h *hub) applyInOrderLocked(st *originState, ev Event, now time.Time) {
	st.last = ev.Seq
	if !st.inPosition {
		st.inPosition = true
	}
	h.pos = h.pos.with(ev.Origin, ev.Seq)
	h.posID = h.pos.String()
	h.idx++
	e := &histEntry{idx: h.idx, ev: ev, pos: h.pos, frame: encodeFrame(h.posID, &ev), at: now}
	h.deliverLocked(e, h.historySize > 0)
}

func (h *hub) drainPendingLocked(st *originState, now time.Time) {
	for len(st.pending) > 0 {
		next, ok := st.pending[st.last+1]
		if !ok {
			break
		}
		delete(st.pending, next.Seq)
		h.m.applied("reordered").Inc()
		h.applyInOrderLocked(st, next, now)
	}
	if st.repairing != 0 && st.last >= st.repairing {
		st.repairing = 0
	}
	if len(st.pending) == 0 {
		st.pending = nil
	}
}

// deliverLocked queues e's frame to the stream's subscribers and keeps it in history.
func (h *hub) deliverLocked(e *histEntry, keep bool) {
	ss := h.streams[e.ev.Stream]
	if ss == nil {
		if !keep {
			return
		}
		ss = newStreamState()
		h.streams[e.ev.Stream] = ss
	}
	if keep {
		ss.hist.push(e)
		if n := ss.trim(h.historySize, h.historyAge, e.at); n > 0 {
			h.m.historyEvicted.Add(float64(n))
		}
	}
	if len(ss.subs) > 0 {
		h.fanout = append(h.fanout, fanItem{ss, e})
	}
	queued := 0
	for sub := range ss.multi {
		q, ok := h.pushTo(sub, e)
		if !ok {
			h.overflowLocked(sub)
			continue
		}
		queued += q
	}
	h.m.framesQueued.Add(float64(queued))
}

// aheadFrame gives the frame for a subscriber whose resume point is past
// this replica's position, or false when the client already has e.
func aheadFrame(sub *subscriber, e *histEntry) ([]byte, bool) {
	if e.ev.Origin != "" && e.ev.Seq <= sub.ahead.get(e.ev.Origin) {
		return nil, false
	}
	if e.pos == nil {
		return e.frame, true
	}
	frame := appendFrame(nil, e.pos.merge(sub.ahead).String(), &e.ev)
	if e.pos.covers(sub.ahead) {
		sub.ahead = nil
	}
	return frame, true
}

// fill applies events fetched to repair a gap.
func (h *hub) fill(events []Event) {
	h.apply(events, "repair")
}

// giveUp stops waiting for an origin's events up to upTo: what has not
// arrived is counted as lost and the events held behind the gap go out.
func (h *hub) giveUp(origin string, upTo uint64) {
	h.mu.Lock()
	if st := h.origins[origin]; st != nil {
		h.giveUpLocked(origin, st, upTo)
	}
	h.unlockAndFanOut()
}

func (h *hub) giveUpLocked(origin string, st *originState, upTo uint64) {
	now := h.now()
	var lost uint64
	for st.last < upTo {
		if ev, ok := st.pending[st.last+1]; ok {
			delete(st.pending, ev.Seq)
			h.applyInOrderLocked(st, ev, now)
			continue
		}
		st.last++
		lost++
	}
	if lost > 0 {
		st.lostUpTo = max(st.lostUpTo, st.last)
		h.m.eventsLost.Add(float64(lost))
		h.log.Info("events lost: a gap from an origin could not be repaired", "origin", origin, "lost", lost, "upTo", upTo)
	}
	st.repairing = 0
	h.drainPendingLocked(st, now)
	if len(st.pending) > 0 {
		// Another gap lies further on: repair it next, from the lowest held seq.
		low := uint64(0)
		for s := range st.pending {
			if low == 0 || s < low {
				low = s
			}
		}
		st.repairing = low - 1
		g := gapRequest{origin: origin, after: st.last, upTo: low - 1}
		go h.requestRepairs([]gapRequest{g})
	}
}

// resumeResult says how a subscription started.
type resumeResult struct {
	resumed  bool // the client gave a position
	replayed int  // events sent from history
	lost     bool // some events the client missed are no longer held
}

// subscribe registers sub and queues, atomically with respect to apply, the
// connect preamble: the retry line, the events the client missed since from
// (when resuming), and an id frame with its position. No event can fall
// between the replay and the live frames, and none can be in both.
func (h *hub) subscribe(sub *subscriber, from position, resuming bool, retryMs int64) (resumeResult, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return resumeResult{}, false
	}
	res := resumeResult{resumed: resuming}
	frames := [][]byte{appendRetry(nil, retryMs)}
	id := h.posID
	if resuming {
		var ahead position
		for _, e := range from {
			if e.seq > h.pos.get(e.origin) {
				ahead = append(ahead, e)
			}
		}
		if len(ahead) > 0 {
			sub.ahead = ahead
		}
		res.lost = h.lostSinceLocked(sub.streams, from)
		missed := h.missedLocked(sub.streams, from)
		for _, e := range missed {
			// Replicas apply different origins in different orders, so the
			// position this replica had after e may lack some of what the
			// client had before it resumed: its id must cover both, or a
			// client that stops mid-replay would get events twice later.
			frame := e.frame
			if !e.pos.covers(from) {
				frame = appendFrame(nil, e.pos.merge(from).String(), &e.ev)
			}
			frames = append(frames, frame)
		}
		res.replayed = len(missed)
		if res.lost {
			frames = append(frames, lostFrame(sub.streams))
		}
		id = h.pos.merge(from).String()
	}
	frames[0] = append(frames[0], '\n')
	frames = append(frames, appendIDFrame(nil, id))
	sub.pushUnbounded(frames...)

	for _, name := range sub.streams {
		ss := h.streams[name]
		if ss == nil {
			ss = newStreamState()
			h.streams[name] = ss
		}
		if len(sub.streams) > 1 {
			ss.multi[sub] = struct{}{}
			continue
		}
		// Wait out a fan-out in progress: its event is already in this
		// client's replay or before its position, never in both.
		ss.fanMu.Lock()
		ss.subs[sub] = struct{}{}
		ss.fanMu.Unlock()
	}
	h.subs[sub] = struct{}{}
	if h.draining {
		h.scheduleDrainLocked(sub, h.now())
	}
	h.m.connections.Inc()
	h.m.replayed.Add(float64(res.replayed))
	return res, true
}

// missedLocked lists the history entries of streams past from, in apply order.
func (h *hub) missedLocked(streams []string, from position) []*histEntry {
	var out []*histEntry
	for _, name := range streams {
		ss := h.streams[name]
		if ss == nil {
			continue
		}
		for i := 0; i < ss.hist.len(); i++ {
			e := ss.hist.at(i)
			if e.ev.Seq > from.get(e.ev.Origin) {
				out = append(out, e)
			}
		}
	}
	if len(streams) > 1 {
		slices.SortFunc(out, func(a, b *histEntry) int {
			switch {
			case a.idx < b.idx:
				return -1
			case a.idx > b.idx:
				return 1
			}
			return 0
		})
	}
	return out
}

// lostSinceLocked reports whether a client at from has missed events on
// streams that this replica no longer holds (evicted from history, given up
// in a gap, or from before this replica knew the origin).
func (h *hub) lostSinceLocked(streams []string, from position) bool {
	for _, name := range streams {
		if ss := h.streams[name]; ss != nil {
			for origin, seq := range ss.evicted {
				if seq > from.get(origin) {
					return true
				}
			}
		}
	}
	for origin, st := range h.origins {
		if !st.inPosition {
			continue
		}
		f := from.get(origin)
		if st.lostUpTo > f || st.base > f {
			return true
		}
	}
	return false
}

// unsubscribe removes a subscriber whose connection ended.
func (h *hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	h.removeLocked(sub, reasonNone)
	h.mu.Unlock()
}

func (h *hub) removeLocked(sub *subscriber, reason closeReason) {
	if _, ok := h.subs[sub]; !ok {
		return
	}
	delete(h.subs, sub)
	for _, name := range sub.streams {
		if ss := h.streams[name]; ss != nil {
			if len(sub.streams) > 1 {
				delete(ss.multi, sub)
			} else {
				ss.fanMu.Lock()
				delete(ss.subs, sub)
				ss.fanMu.Unlock()
			}
			if ss.idle() {
				delete(h.streams, name)
			}
		}
	}
	if sub.drainTimer != nil {
		sub.drainTimer.Stop()
	}
	h.m.connections.Dec()
	if reason != reasonNone {
		sub.close(reason)
	}
}

// closeSubscriber ends a subscription from outside the delivery path.
func (h *hub) closeSubscriber(sub *subscriber, reason closeReason) {
	h.mu.Lock()
	if _, ok := h.subs[sub]; ok {
		h.m.subscriberClosed.WithLabelValues(reason.String()).Inc()
	}
	h.removeLocked(sub, reason)
	h.mu.Unlock()
}

// drain closes every subscriber at a random moment within window, and any
// that connect meanwhile at a random moment in what is left of it.
func (h *hub) drain(window time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.draining {
		return
	}
	now := h.now()
	h.draining = true
	h.drainEnd = now.Add(window)
	for sub := range h.subs {
		h.scheduleDrainLocked(sub, now)
	}
}

func (h *hub) scheduleDrainLocked(sub *subscriber, now time.Time) {
	left := h.drainEnd.Sub(now)
	var d time.Duration
	if left > 0 {
		d = rand.N(left)
	}
	sub.drainTimer = time.AfterFunc(d, func() { h.closeSubscriber(sub, reasonDrain) })
}

// subscriberCount is the number of connected subscribers.
func (h *hub) subscriberCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// shutdown closes every subscriber and refuses new ones.
func (h *hub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for sub := range h.subs {
		h.removeLocked(sub, reasonShutdown)
	}
}

// sweep evicts history past its age on quiet streams, forgets empty
// streams, and drops from ids the origins idle for longer than the history
// age: no replica holds their events any more, so ids stay short.
func (h *hub) sweep() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	for name, ss := range h.streams {
		if n := ss.trim(h.historySize, h.historyAge, now); n > 0 {
			h.m.historyEvicted.Add(float64(n))
		}
		if ss.idle() {
			delete(h.streams, name)
		}
	}
	if h.historyAge <= 0 {
		return
	}
	var stale map[string]bool
	for origin, st := range h.origins {
		if st.inPosition && len(st.pending) == 0 && now.Sub(st.lastAt) > h.historyAge {
			st.inPosition = false
			if stale == nil {
				stale = make(map[string]bool)
			}
			stale[origin] = true
		}
		if !st.inPosition && now.Sub(st.lastAt) > 10*h.historyAge {
			delete(h.origins, origin)
		}
	}
	if stale != nil {
		h.pos = h.pos.without(func(o string) bool { return stale[o] })
		h.posID = h.pos.String()
		for _, ss := range h.streams {
			for o := range stale {
				delete(ss.evicted, o)
			}
		}
	}
}

// divergence compares a peer's knowledge of origins with ours and returns
// the ranges that peer holds and we lack, for origins we have not heard
// from for quiet (so not merely in flight). This is how the tail of an
// origin that died before reaching every peer still gets everywhere: the
// dead origin never sends again, so no seq gap would ever show it.
func (h *hub) divergence(peer []OriginInfo, self string, quiet time.Duration) []gapRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.warming || h.closed {
		return nil
	}
	now := h.now()
	var gaps []gapRequest
	for _, info := range peer {
		if info.Origin == self || !validOrigin(info.Origin) || info.Last == 0 {
			continue
		}
		st := h.origins[info.Origin]
		if st == nil {
			st = &originState{last: info.Base, base: info.Base, lastAt: now.Add(-quiet - 1)}
			h.origins[info.Origin] = st
		}
		if info.Last <= st.last || st.repairing != 0 || len(st.pending) > 0 || now.Sub(st.lastAt) <= quiet {
			continue
		}
		st.repairing = info.Last
		gaps = append(gaps, gapRequest{origin: info.Origin, after: st.last, upTo: info.Last})
	}
	return gaps
}

// origins lists what this replica knows of each origin in its position.
func (h *hub) originInfos() []OriginInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]OriginInfo, 0, len(h.origins))
	for origin, st := range h.origins {
		if st.inPosition {
			out = append(out, OriginInfo{Origin: origin, Last: st.last, Base: st.base, LostUpTo: st.lostUpTo})
		}
	}
	return out
}

// historyLen is the number of events held, for the metrics.
func (h *hub) historyLen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ss := range h.streams {
		n += ss.hist.len()
	}
	return n
}

// lostFrame tells a resuming client that some of the events it missed are
// no longer held. It is a named event, so EventSource's onmessage ignores it
// and listeners opt in with addEventListener("sser-lost", ...).
func lostFrame(streams []string) []byte {
	ev := Event{Event: LostEventType, Msg: `{"reason":"history","streams":` + jsonStrings(streams) + `}`}
	return appendFrame(nil, "", &ev)
}

// LostEventType is the SSE event type sent to a resuming client when some
// of the events it missed are no longer held (history size or age exceeded).
const LostEventType = "sser-lost"
