package sser

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// hub holds the streams and subscribers of one replica and applies events in
// per-origin order. It is a composition under one lock (mu): the sequencer
// (per-origin order, gaps, duplicates), the history (rings and their
// indexes) and the fan-out (per-stream registries). Sequencing is serialized:
// the position vector after each event is then well defined.
//
// An event's id is its stream's position, not the replica's: the replica's
// position restricted to the origins that published to that stream within
// the history age. A subscriber's id then grows with the publishers of what
// it reads, not with every publisher of the deployment, and each frame is
// still encoded once for all the stream's subscribers.
//
// Lock order: hub.mu, then a stream's fanMu (several in one unlockAndFanOut,
// always taken while hub.mu is held, so two appliers cannot take them in
// opposite orders), then a subscriber's mu. Queueing a frame to a stream's
// single-stream subscribers runs under that stream's fanMu after hub.mu is
// released; subscribers of several streams are served under hub.mu, since
// their frames must follow one apply order across streams. Writing to
// sockets happens in each subscriber's own writer, outside all of them.
type hub struct {
	log logr.Logger
	m   *metrics
	// self is this replica's origin, named in the id that claims nothing.
	self string
	now  func() time.Time
	opts hubOptions
	// repair, when set, is told (outside the lock) which origins have gaps;
	// it fetches what is missing and calls fill or giveUp. Without it gaps
	// are given up at once.
	repair func(origin string)

	mu      sync.Mutex
	seq     *sequencer
	hist    *history
	streams map[string]*streamState
	// sets are the sets of subscribers of several streams or patterns, by
	// key; patterns indexes those with patterns by each pattern's literal
	// prefix, so a new stream finds its sets without a look at all.
	sets     map[string]*streamSet
	patterns map[string][]*streamSet
	// pos is everything this replica has applied, all streams together.
	pos      position
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
	// progress is when the lock was last taken and released by the
	// watchdog's probe (unix nanoseconds).
	progress atomic.Int64
	// clock times drain closes, and heartbeats, maximum connection time
	// and credential expiry of hijacked connections.
	clock *clock
	beat  beatTiming
	// lostNotices counts the ranges given up and told to every
	// subscriber (for the status page).
	lostNotices atomic.Uint64
	// gzip: some connections may be compressed; each frame fanned out to
	// a stream's subscribers gets a shared deflate (compression.go).
	gzip bool
}

// hubOptions are the hub's limits.
type hubOptions struct {
	historySize int
	historyAge  time.Duration
	maxSeqGap   uint64
	// One resume replays at most this many events and bytes.
	maxReplayEvents int
	maxReplayBytes  int
}

type fanItem struct {
	ss *streamState
	e  *histEntry
}

type heldBatch struct {
	events   []Event
	source   string
	heldFrom uint64
}

func newHub(log logr.Logger, m *metrics, historySize int, historyAge time.Duration) *hub {
	h := &hub{
		log:      log,
		m:        m,
		opts:     hubOptions{historySize: historySize, historyAge: historyAge, maxReplayEvents: DefaultMaxReplayEvents, maxReplayBytes: DefaultMaxReplayBytes},
		now:      time.Now,
		seq:      newSequencer(),
		streams:  make(map[string]*streamState),
		sets:     make(map[string]*streamSet),
		subs:     make(map[*subscriber]struct{}),
		patterns: make(map[string][]*streamSet),
		self:     "none",
	}
	h.hist = newHistory(historySize, historyAge, func(n int) { m.historyEvicted.Add(float64(n)) })
	h.hist.emptied = func(ss *streamState) {
		if ss.idle() {
			h.forgetStreamLocked(ss)
		}
	}
	h.progress.Store(time.Now().UnixNano())
	h.clock = newClock(h.onTimer)
	h.beat = newBeatTiming(DefaultHeartbeat)
	return h
}

// onTimer is the clock's call for a subscriber with a deadline due: a
// drain or end-of-life close, or a look at its heartbeat.
func (h *hub) onTimer(sub *subscriber, now int64) {
	t := h.clock.timers(sub)
	switch {
	case t.drainAt != 0 && now >= t.drainAt:
		h.closeSubscriber(sub, reasonDrain)
		return
	case t.endAt != 0 && now >= t.endAt:
		reason := reasonMaxAge
		if t.expiry {
			reason = reasonExpired
		}
		h.closeSubscriber(sub, reason)
		return
	}
	next := t.beatAt
	if next != 0 && now >= next {
		next = sub.beat(now, h.beat)
	}
	h.clock.set(sub, func(t *subTimers) { t.beatAt = next })
}

// apply delivers events to this replica's subscribers and history. Events
// with an origin are applied in seq order: duplicates are dropped, and an
// event past a gap waits for the gap to be repaired.
func (h *hub) apply(events []Event, source string) {
	_ = h.applyFrom(events, source, 0)
}

// applyFrom is apply for events from a peer, checked first as a whole: a
// seq further ahead than any outbox could cover refuses the whole batch.
// heldFrom is the lowest seq the sending origin still holds (0 unknown):
// what lies before it is repaired from other replicas or given up.
func (h *hub) applyFrom(events []Event, source string, heldFrom uint64) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	for i := range events {
		if events[i].Origin == "" {
			continue
		}
		if err := h.seq.checkJump(&events[i], heldFrom, h.opts.maxSeqGap); err != nil {
			h.mu.Unlock()
			return err
		}
	}
	if h.warming {
		h.held = append(h.held, heldBatch{events: events, source: source, heldFrom: heldFrom})
		h.mu.Unlock()
		return nil
	}
	gaps := h.applyLocked(events, source, heldFrom)
	h.unlockAndFanOut()
	h.requestRepairs(gaps)
	return nil
}

// applyOwn stamps this replica's own events (stamp gives them their seqs)
// and applies them, as one step under the hub's lock: seqs are then taken
// in the order events are applied, so an own event never waits behind
// another one still being stamped. The fan-out runs after the lock is
// released, so publishers to other streams do not wait for it. ctxErr is
// checked once the lock is had: a caller that gave up while waiting
// publishes nothing, or its retry would publish twice.
func (h *hub) applyOwn(events []Event, ctxErr func() error, stamp func() error) error {
	h.mu.Lock()
	if err := ctxErr(); err != nil {
		h.mu.Unlock()
		return err
	}
	if err := stamp(); err != nil {
		h.mu.Unlock()
		return err
	}
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	if h.warming {
		h.held = append(h.held, heldBatch{events: events, source: "local"})
		h.mu.Unlock()
		return nil
	}
	gaps := h.applyLocked(events, "local", 0)
	h.unlockAndFanOut()
	h.requestRepairs(gaps)
	return nil
}

// applyLocked applies events and returns the origins left with a gap.
func (h *hub) applyLocked(events []Event, source string, heldFrom uint64) []string {
	var gaps []string
	now := h.now()
	for i := range events {
		ev := events[i]
		if ev.Origin == "" {
			// No origin: delivered live to this replica only, with no id
			// and no history, since no other replica can know of it (nor
			// retained: replicas would disagree).
			if ev.clearsRetained() {
				continue
			}
			h.m.applied(source).Inc()
			h.deliverLocked(&histEntry{ev: ev, frame: encodeFrame("", &ev), born: bornAt(&ev, now)}, false)
			continue
		}
		st, res := h.seq.offer(ev, now)
		if heldFrom > 0 {
			st.heldFrom = max(st.heldFrom, heldFrom)
		}
		switch res {
		case offerDuplicate:
			h.m.eventsDuplicate.Inc()
		case offerHeld, offerDeferred:
			if res == offerDeferred {
				h.m.eventsDeferred.Inc()
			}
			if len(gaps) == 0 || gaps[len(gaps)-1] != ev.Origin {
				gaps = append(gaps, ev.Origin)
			}
		case offerApply:
			h.m.applied(source).Inc()
			h.applyInOrderLocked(ev, now)
			h.drainPendingLocked(st, now)
		}
	}
	return gaps
}

func (h *hub) drainPendingLocked(st *originState, now time.Time) {
	for {
		ev, ok := h.seq.next(st)
		if !ok {
			return
		}
		h.m.applied("reordered").Inc()
		h.applyInOrderLocked(ev, now)
	}
}

func (h *hub) applyInOrderLocked(ev Event, now time.Time) {
	if st := h.seq.origins[ev.Origin]; st != nil && !st.inPosition {
		st.inPosition = true
	}
	h.pos = h.pos.with(ev.Origin, ev.Seq)
	h.idx++
	keep := h.opts.historySize > 0
	ss := h.streams[ev.Stream]
	if ss == nil {
		if !keep && !ev.Retain && !h.patternMatchesLocked(ev.Stream) {
			return // no history and no subscriber: nobody to tell
		}
		ss = h.streamLocked(ev.Stream)
	}
	// The stream's entry for the origin is the replica's, hole included:
	// the events it lacks may have been on this stream.
	ss.pos = ss.pos.set(h.pos.entry(ev.Origin))
	if ss.seen == nil {
		ss.seen = make(map[string]time.Time)
	}
	ss.seen[ev.Origin] = now
	e := &histEntry{idx: h.idx, ev: ev, pos: ss.pos, at: now, born: bornAt(&ev, now)}
	if !ev.clearsRetained() {
		e.frame = encodeFrame(ss.pos.String(), &ev)
	}
	if ev.Retain {
		h.retainLocked(ss, e)
	}
	h.deliverLocked(e, keep)
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
		if it.e.gz != nil && it.ss.gzSubs > 0 {
			// Deflated here, once, before any writer wants it: lazily,
			// the stream's compressed writers would queue on it one by
			// one.
			it.e.gz.bytes(it.e.frame)
		}
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
	frame := e.frameFor(sub)
	if sub.ahead != nil || sub.lacks != nil {
		var ok bool
		if frame, ok = aheadFrame(sub, e); !ok {
			return 0, true
		}
	}
	if !sub.push(frame, e) {
		return 0, false
	}
	return 1, true
}

// bornAt is when ev's origin accepted it, or now when it did not say.
func bornAt(ev *Event, now time.Time) int64 {
	if ev.At > 0 {
		return ev.At
	}
	return now.UnixMicro()
}

func (h *hub) overflowLocked(sub *subscriber) {
	if _, ok := h.subs[sub]; !ok {
		return
	}
	h.m.subscriberClosed.WithLabelValues(reasonOverflow.String()).Inc()
	h.log.V(1).Info("subscriber fell behind its queue, disconnecting it", "streams", sub.streams, "queue", sub.maxQueue)
	h.removeLocked(sub, reasonOverflow)
}

// requestRepairs hands origins with a gap to the repair, or gives their
// gaps up when there is none.
func (h *hub) requestRepairs(origins []string) {
	for _, o := range origins {
		if h.repair != nil {
			h.repair(o)
			continue
		}
		if _, upTo, ok := h.gap(o); ok {
			h.giveUp(o, upTo)
		}
	}
}

// deliverLocked queues e's frame to the stream's subscribers and keeps it in history.
func (h *hub) deliverLocked(e *histEntry, keep bool) {
	ss := h.streams[e.ev.Stream]
	if ss == nil {
		if !keep && !h.patternMatchesLocked(e.ev.Stream) {
			return
		}
		ss = h.streamLocked(e.ev.Stream)
	}
	if e.frame != nil && ss.wsSubs > 0 && e.ws == nil {
		// Encoded once for all the stream's WebSocket subscribers, and
		// counted in history with the SSE frame.
		f := wsEventFrame(e.pos.String(), &e.ev)
		e.ws = &f
	}
	if keep {
		h.hist.add(ss, e)
	}
	if e.frame == nil {
		return // a clear of retained state: kept for repairs, sent to no one
	}
	if h.gzip {
		e.gz = &gzShared{prev: ss.last}
		ss.last = e.frame
	}
	if len(ss.subs) > 0 {
		h.fanout = append(h.fanout, fanItem{ss, e})
	}
	if len(ss.sets) == 0 {
		return
	}
	queued := 0
	var overflow []*subscriber
	for _, set := range ss.sets {
		// A set's subscribers get the merge of its streams' positions,
		// encoded once for all of them.
		id := ""
		if e.pos != nil {
			set.advance(e.ev.Origin, ss, e.at)
			id = set.pos.String()
		}
		me := &histEntry{idx: e.idx, ev: e.ev, pos: set.pos, frame: appendSetFrame(nil, id, &e.ev, set.format), at: e.at, born: e.born}
		if e.pos == nil {
			me.pos = nil
		}
		if set.format == formatWS {
			me.ws = &me.frame
		}
		for sub := range set.subs {
			q, ok := h.pushTo(sub, me)
			if !ok {
				overflow = append(overflow, sub)
				continue
			}
			queued += q
		}
	}
	for _, sub := range overflow {
		h.overflowLocked(sub)
	}
	h.m.framesQueued.Add(float64(queued))
}

// streamsPosLocked is the position of a subscriber of streams: the merge of
// their positions.
func (h *hub) streamsPosLocked(streams []string) position {
	var pos position
	for _, name := range streams {
		if ss := h.streams[name]; ss != nil && len(ss.pos) > 0 {
			if pos == nil {
				pos = ss.pos
			} else {
				pos = pos.merge(ss.pos)
			}
		}
	}
	return pos
}

// aheadFrame gives the frame for a subscriber whose resume point holds
// events this replica has not applied (yet), or that lacks events this
// replica could not replay, or false when the client already has e. The id
// then merges both, so it never moves backwards and never claims what the
// client lacks; once the stream's position covers the resume point, the
// shared frame is used again.
func aheadFrame(sub *subscriber, e *histEntry) ([]byte, bool) {
	if e.ev.Origin != "" && sub.ahead.has(e.ev.Origin, e.ev.Seq) {
		return nil, false
	}
	if e.pos == nil {
		return e.frameFor(sub), true
	}
	if sub.lacks != nil {
		// The client lacks events this replica can no longer give: every
		// id it gets says so.
		return appendSetFrame(nil, e.pos.merge(sub.ahead).withHoles(sub.lacks).String(), &e.ev, sub.format), true
	}
	if sub.ahead == nil {
		return e.frameFor(sub), true
	}
	if e.pos.covers(sub.ahead) {
		sub.ahead = nil
		return e.frameFor(sub), true
	}
	return appendSetFrame(nil, e.pos.merge(sub.ahead).String(), &e.ev, sub.format), true
}

// fill applies events fetched to repair a gap.
func (h *hub) fill(events []Event) {
	h.apply(events, "repair")
}

// gap is what origin lacks now, for the repair: (after, upTo].
func (h *hub) gap(origin string) (after, upTo uint64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.warming {
		return 0, 0, false
	}
	return h.seq.gap(origin)
}

// heldFrom is the lowest seq origin said it still holds, 0 when unknown.
func (h *hub) heldFrom(origin string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.seq.origins[origin]; st != nil {
		return st.heldFrom
	}
	return 0
}

// giveUp stops waiting for an origin's events up to upTo: what has not
// arrived is counted as lost, every subscriber is told, and the position
// records the hole so no id claims those events. The events held behind
// the gap go out.
func (h *hub) giveUp(origin string, upTo uint64) {
	h.mu.Lock()
	if st := h.seq.origins[origin]; st != nil && !h.closed {
		h.giveUpLocked(origin, st, upTo)
	}
	h.unlockAndFanOut()
}

func (h *hub) giveUpLocked(origin string, st *originState, upTo uint64) {
	now := h.now()
	var lost uint64
	lose := func(lo, hi uint64) {
		lost += hi - lo
		h.pos = h.pos.withHole(origin, lo, hi)
		st.lostAt = now
		h.log.Info("events lost: an origin's events could not be had from it or any peer", "origin", origin, "after", lo, "upTo", hi, "lost", hi-lo)
		h.tellLostLocked(lostNotice{Reason: "gap", Origin: origin, After: lo, UpTo: hi})
	}
	h.seq.giveUp(st, upTo, lose, func(ev Event) {
		h.m.applied("reordered").Inc()
		h.applyInOrderLocked(ev, now)
	})
	if lost > 0 {
		st.inPosition = true
		h.m.eventsLost.Add(float64(lost))
	}
}

// lostNotice is the data of an sser-lost event.
type lostNotice struct {
	// Reason is "gap" (an origin's events could not be had from it or any
	// peer) or "history" (a resuming client missed events no longer held).
	Reason  string   `json:"reason"`
	Origin  string   `json:"origin,omitempty"`
	After   uint64   `json:"after,omitempty"`
	UpTo    uint64   `json:"upTo,omitempty"`
	Streams []string `json:"streams,omitempty"`
}

// tellLostLocked queues an sser-lost notice to every subscriber: which
// streams the lost events were on is not known here.
func (h *hub) tellLostLocked(n lostNotice) {
	h.lostNotices.Add(1)
	frame := lostFrame(n)
	var wsFrame []byte
	var overflow []*subscriber
	for sub := range h.subs {
		f := frame
		if sub.ws != nil {
			if wsFrame == nil {
				wsFrame = wsLostFrame(n)
			}
			f = wsFrame
		}
		if !sub.push(f, nil) {
			overflow = append(overflow, sub)
		}
	}
	for _, sub := range overflow {
		h.overflowLocked(sub)
	}
}

// resumeResult says how a subscription started.
type resumeResult struct {
	resumed  bool // the client gave a position
	replayed int  // events sent from history
	lost     bool // some events the client missed are no longer held
	// truncated: the client missed more than one resume may replay; it got
	// the oldest part and is not subscribed: it resumes again for the rest.
	truncated bool
}

// maxUnknownOrigins bounds the origins of a resume point that this replica
// has not heard of, kept so their events (in flight here) are not sent
// twice; the others are ignored.
const maxUnknownOrigins = 4

// knownPart is from without the origins this replica does not know, beyond
// maxUnknownOrigins of them.
func (h *hub) knownPartLocked(from position) position {
	unknown := 0
	out := from[:0:0]
	for _, e := range from {
		if _, ok := h.seq.origins[e.origin]; !ok {
			if unknown++; unknown > maxUnknownOrigins {
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// subscribe registers sub and queues, atomically with respect to apply, the
// connect preamble: the retry line, the events the client missed since from
// (when resuming), and an id frame with its position. No event can fall
// between the replay and the live frames, and none can be in both. A
// client that missed more than maxReplay events or bytes gets the oldest of
// them and is not registered: it resumes again from the last one.
func (h *hub) subscribe(sub *subscriber, from position, resuming bool, retryMs int64) (resumeResult, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return resumeResult{}, false
	}
	if g := sub.group; g != nil && (g.done || g.ctx.Err() != nil) {
		// The handler's context ended (closeGroup may not have run yet).
		return resumeResult{}, false
	}
	res := resumeResult{resumed: resuming}
	// The preamble: the retry field, then (below) an id-only frame; a
	// WebSocket's is its subscribed message.
	var frames [][]byte
	if sub.ws == nil {
		frames = append(frames, appendRetry(nil, retryMs))
	}
	streams := sub.streams
	var pos position
	var set *streamSet
	if sub.multi() {
		set = h.setLocked(sub)
		streams = set.memberNames()
		pos = set.pos
	} else {
		pos = h.streamsPosLocked(streams)
	}
	id := pos.String()
	if resuming {
		from = h.knownPartLocked(from.without(func(o string) bool { return from.entry(o).claimsNothing() }))
		// What the client holds that this replica has not applied (yet):
		// skipped when it comes, and merged into every id meanwhile.
		var ahead position
		for _, f := range from {
			if !h.pos.covers(position{f}) {
				ahead = append(ahead, f)
			}
		}
		if len(ahead) > 0 {
			sub.ahead = ahead
		}
		// The part of the resume point that ids carry on: the origins of
		// these streams and those ahead. The rest published nothing to
		// these streams within the history age, as far as this replica
		// knows, so an id without them claims nothing less.
		rel := from.without(func(o string) bool {
			_, onStreams := pos.find(o)
			_, isAhead := ahead.find(o)
			return !onStreams && !isAhead
		})
		lacks := h.lacksLocked(streams, from)
		res.lost = len(lacks) > 0
		sub.lacks = lacks
		missed := h.missedLocked(streams, from)
		bytes := 0
		acc := rel
		for _, e := range missed {
			if res.replayed == h.opts.maxReplayEvents || (res.replayed > 0 && bytes+len(e.frame) > h.opts.maxReplayBytes) {
				res.truncated = true
				break
			}
			// Replicas apply different origins in different orders, and a
			// subscriber of several streams reads several positions: each
			// replayed id covers what the client had before it resumed and
			// everything replayed so far, or a client that stops mid-replay
			// would get events twice later.
			acc = acc.merge(e.pos)
			if e.frame == nil {
				continue // a clear of retained state
			}
			frame := e.frameFor(sub)
			switch {
			case lacks != nil || !e.pos.covers(acc):
				frame = appendSetFrame(nil, acc.withHoles(lacks).String(), &e.ev, sub.format)
			case set != nil:
				frame = e.setFrame(sub.format)
			}
			frames = append(frames, frame)
			bytes += len(frame)
			res.replayed++
		}
		if res.lost {
			frames = append(frames, sub.lostFrame(lostNotice{Reason: "history", Streams: sub.streams}))
		}
		id = pos.merge(rel).withHoles(lacks).String()
	} else {
		// A new subscriber gets the retained state of its streams first,
		// with no id: the id-only frame after it covers it, and nothing
		// can be applied in between.
		frames = h.appendRetainedLocked(frames, sub, set)
	}
	if id == "" {
		id = nothingPosition(h.self).String()
	}
	if sub.ws == nil {
		frames[0] = append(frames[0], '\n')
		if sub.noPreamble {
			frames = frames[1:]
		}
	}
	h.m.replayed.Add(float64(res.replayed))
	if res.truncated {
		// No final id: the client's id is the last replayed event's, and
		// it comes back for the rest.
		sub.pushUnbounded(frames...)
		h.m.replayTruncated.Inc()
		if set != nil && len(set.subs) == 0 {
			h.dropSetLocked(set)
		}
		return res, true
	}
	if sub.ws != nil || !sub.noPreamble {
		frames = append(frames, sub.idFrame(id, res))
	}
	sub.pushUnbounded(frames...)
	h.addLocked(sub, set)
	h.subs[sub] = struct{}{}
	if h.draining {
		h.scheduleDrainLocked(sub, h.now())
	}
	h.m.connections.Inc()
	return res, true
}

// addLocked makes set (nil for a single-stream subscriber) serve sub.
func (h *hub) addLocked(sub *subscriber, set *streamSet) {
	sub.set = set
	if set != nil {
		set.subs[sub] = struct{}{}
		return
	}
	ss := h.streamLocked(sub.streams[0])
	// Wait out a fan-out in progress: its event is already in this
	// client's replay or before its position, never in both.
	ss.fanMu.Lock()
	ss.subs[sub] = struct{}{}
	if sub.gz != nil {
		ss.gzSubs++
	}
	if sub.ws != nil {
		ss.wsSubs++
	}
	ss.fanMu.Unlock()
}

// leaveLocked undoes addLocked for set, or for single stream name when set
// is nil (see subscriber.single), and forgets what is left with nothing on this replica.
func (h *hub) leaveLocked(sub *subscriber, set *streamSet, name string) {
	if set != nil {
		delete(set.subs, sub)
		if len(set.subs) == 0 {
			h.dropSetLocked(set)
		}
		return
	}
	ss := h.streams[name]
	if ss == nil {
		return
	}
	// Waits out a fan-out in progress, which still queues to sub.
	ss.fanMu.Lock()
	delete(ss.subs, sub)
	if sub.gz != nil {
		ss.gzSubs--
	}
	if sub.ws != nil {
		ss.wsSubs--
	}
	ss.fanMu.Unlock()
	if ss.idle() {
		h.forgetStreamLocked(ss)
	}
}

// missedLocked lists the history entries of streams that from lacks, in
// apply order.
func (h *hub) missedLocked(streams []string, from position) []*histEntry {
	var out []*histEntry
	for _, name := range streams {
		ss := h.streams[name]
		if ss == nil {
			continue
		}
		for i := 0; i < ss.hist.len(); i++ {
			e := ss.hist.at(i)
			if !from.has(e.ev.Origin, e.ev.Seq) {
				out = append(out, e)
			}
		}
	}
	if len(streams) > 1 {
		slices.SortFunc(out, func(a, b *histEntry) int { return cmpUint(a.idx, b.idx) })
	}
	return out
}

// lacksLocked is what a client at from lacks on streams that this replica
// can no longer replay (evicted from history, given up in a gap, or from
// before this replica knew the origin), as one hole per origin: empty when
// nothing. The ids written for the client carry these holes, so they never
// claim what it did not get, and a replica that still holds it can give it.
func (h *hub) lacksLocked(streams []string, from position) position {
	gone := make(map[string]uint64) // origin -> highest seq that cannot be replayed
	for _, name := range streams {
		if ss := h.streams[name]; ss != nil {
			for origin, seq := range ss.evicted {
				gone[origin] = max(gone[origin], seq)
			}
		}
	}
	for origin, st := range h.seq.origins {
		if st.inPosition {
			gone[origin] = max(gone[origin], st.base)
		}
	}
	var lacks position
	for origin, upTo := range gone {
		f := from.entry(origin)
		if e := h.pos.entry(origin); e.hasHole() && f.lacksSome(span{e.lo, e.hi}) {
			upTo = max(upTo, e.hi)
		}
		if upTo == 0 || !f.lacksSome(span{0, upTo}) {
			continue
		}
		first := true
		var hole span
		for _, m := range f.missing(upTo) {
			if m.hi <= m.lo {
				continue
			}
			if first {
				hole, first = m, false
			} else {
				hole = span{min(hole.lo, m.lo), max(hole.hi, m.hi)}
			}
		}
		if !first {
			lacks = lacks.set(originSeq{origin: origin, seq: hole.hi, lo: hole.lo, hi: hole.hi})
		}
	}
	return lacks
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
	h.leaveLocked(sub, sub.set, sub.single())
	h.clock.remove(sub)
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
	at := monoNow() + int64(d)
	h.clock.set(sub, func(t *subTimers) { t.drainAt = at })
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
// streams, drops from ids the origins idle for longer than the history
// age (no replica holds their events any more, so ids stay short), and
// forgets holes once the events in them would have left every history. A
// stream's id drops an origin that has not published to it for the history
// age. It returns the origins it dropped from the replica's position.
func (h *hub) sweep() (forgotten []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	if n := h.hist.expire(now); n > 0 {
		h.m.historyEvicted.Add(float64(n))
	}
	age := h.opts.historyAge
	if age <= 0 {
		return nil
	}
	var stale map[string]bool
	for origin, st := range h.seq.origins {
		if st.inPosition && len(st.pending) == 0 && now.Sub(st.lastAt) > age {
			st.inPosition = false
			if stale == nil {
				stale = make(map[string]bool)
			}
			stale[origin] = true
			forgotten = append(forgotten, origin)
		}
		if !st.inPosition && now.Sub(st.lastAt) > 10*age {
			delete(h.seq.origins, origin)
		}
		if !st.lostAt.IsZero() && now.Sub(st.lostAt) > 2*age {
			st.lostAt = time.Time{}
			h.pos = h.pos.withoutHole(origin)
		}
	}
	if stale != nil {
		h.pos = h.pos.without(func(o string) bool { return stale[o] })
	}
	for _, ss := range h.streams {
		var dropped []string
		ss.pos, dropped = agePosition(ss.pos, ss.seen, stale, now, age)
		for _, o := range dropped {
			delete(ss.evicted, o)
		}
		for o := range stale {
			delete(ss.evicted, o)
		}
	}
	for _, set := range h.sets {
		set.pos, _ = agePosition(set.pos, set.seen, stale, now, age)
	}
	h.sweepRetainedLocked(now, age)
	return forgotten
}

// divergence compares a peer's notes on origins with ours and returns the
// origins of which that peer holds events we lack and have not heard of
// for quiet (so not merely in flight). This is how the tail of an origin
// that died before reaching every peer still gets everywhere: the dead
// origin never sends again, so no seq gap would ever show it.
func (h *hub) divergence(peer []OriginInfo, self string, quiet time.Duration) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.warming || h.closed {
		return nil
	}
	now := h.now()
	var out []string
	for _, info := range peer {
		if info.Origin == self || !validOrigin(info.Origin) || info.Last == 0 || info.Base > info.Last {
			continue
		}
		st := h.seq.origins[info.Origin]
		if st == nil {
			st = &originState{last: info.Base, base: info.Base, lastAt: now.Add(-quiet - 1)}
			h.seq.origins[info.Origin] = st
		}
		if info.Last <= st.last || now.Sub(st.lastAt) <= quiet {
			continue
		}
		st.want = max(st.want, info.Last)
		out = append(out, info.Origin)
	}
	return out
}

// originInfos lists what this replica knows of each origin in its position.
func (h *hub) originInfos() []OriginInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.originInfosLocked()
}

func (h *hub) originInfosLocked() []OriginInfo {
	out := make([]OriginInfo, 0, len(h.seq.origins))
	for origin, st := range h.seq.origins {
		if st.inPosition {
			info := OriginInfo{Origin: origin, Last: st.last, Base: st.base}
			if e := h.pos.entry(origin); e.hasHole() {
				info.LostFrom, info.LostUpTo = e.lo, e.hi
			}
			out = append(out, info)
		}
	}
	return out
}

// historyLen is the number of events held, for the metrics.
func (h *hub) historyLen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hist.len()
}

// alive is the watchdog's probe: it takes the lock like any publish or
// subscription would, and records that it got it.
func (h *hub) alive() {
	h.mu.Lock()
	h.mu.Unlock() //nolint:staticcheck // an empty critical section is the probe
	h.progress.Store(time.Now().UnixNano())
}

// stalledFor is how long the hub's lock has not been had by the probe.
func (h *hub) stalledFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, h.progress.Load()))
}

// lostFrame is an sser-lost notice: some events the client should have had
// cannot be had. It is a named event, so EventSource's onmessage ignores it
// and listeners opt in with addEventListener("sser-lost", ...).
func lostFrame(n lostNotice) []byte {
	data, _ := json.Marshal(n)
	ev := Event{Event: LostEventType, Msg: string(data)}
	return appendFrame(nil, "", &ev)
}

// LostEventType is the SSE event type that tells a client it missed events
// that cannot be had: on resume when history no longer holds them, and
// live when an origin's events could not be had from it or any peer.
const LostEventType = "sser-lost"
