package sser

import (
	"slices"
	"sort"
	"sync"
	"time"
)

// histEntry is one applied event as this replica delivered it.
type histEntry struct {
	idx   uint64 // apply order on this replica, across streams
	ev    Event
	pos   position // the replica's position right after this event
	frame []byte   // the frame as sent live; replays reuse it
	// ws is the frame as a WebSocket message, encoded when the stream has
	// WebSocket subscribers (else on demand, see frameFor). A pointer: an
	// entry of a stream with none stays in the allocation size it had.
	ws *[]byte
	// setFrames are the frame in the formats of stream sets (tagged,
	// envelope, WebSocket), with the same id, made on the first replay that
	// needs one and shared by every later one. Guarded by hub.mu.
	setFrames *[3][]byte
	at        time.Time
	// born is when its origin accepted the event (Unix microseconds), or
	// when it was applied here if the origin did not say.
	born int64
	// gz is the frame deflated once for compressed connections, when the
	// server compresses.
	gz *gzShared
	// evicted is set when the entry leaves its stream's history; the
	// indexes drop it lazily.
	evicted bool
	ss      *streamState // the stream it belongs to, while held
}

// size is what an entry costs in history, for the byte bounds.
func (e *histEntry) size() int64 {
	n := len(e.frame) + len(e.ev.Msg) + 160
	if e.ws != nil {
		n += len(*e.ws) + 24
	}
	return int64(n)
}

// ring is a growable ring buffer of history entries, oldest first.
type ring struct {
	buf  []*histEntry
	head int
	n    int
}

func (r *ring) len() int { return r.n }

func (r *ring) at(i int) *histEntry { return r.buf[(r.head+i)%len(r.buf)] }

func (r *ring) push(e *histEntry) {
	if r.n == len(r.buf) {
		nb := make([]*histEntry, max(8, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.at(i)
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
}

func (r *ring) popFront() *histEntry {
	e := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if r.n == 0 {
		r.head = 0
		if len(r.buf) > 64 {
			r.buf = nil // give a burst's memory back
		}
	}
	return e
}

// entryLog indexes history entries by a key that only grows as entries are
// appended (the apply index, or one origin's seq), so a range read is a
// binary search and a walk, never a scan of all history. Evicted entries
// are dropped from the front at once and compacted away from the middle
// once they are half the log. Not safe for concurrent use: the hub's lock
// serializes it.
type entryLog struct {
	r       ring
	dead    int // evicted entries still in r
	keyOf   func(*histEntry) uint64
	compact []*histEntry
}

func newEntryLog(key func(*histEntry) uint64) *entryLog { return &entryLog{keyOf: key} }

func (l *entryLog) push(e *histEntry) { l.r.push(e) }

// evicted is called when an entry of this log leaves its stream.
func (l *entryLog) evicted() {
	l.dead++
	for l.r.len() > 0 && l.r.at(0).evicted {
		l.r.popFront()
		l.dead--
	}
	if l.dead > 64 && l.dead > l.r.len()/2 {
		live := l.compact[:0]
		for i := 0; i < l.r.len(); i++ {
			if e := l.r.at(i); !e.evicted {
				live = append(live, e)
			}
		}
		l.r = ring{}
		for _, e := range live {
			l.r.push(e)
		}
		clear(live)
		l.compact = live[:0]
		l.dead = 0
	}
}

func (l *entryLog) live() int { return l.r.len() - l.dead }

// after returns up to limit held entries with key > after and key <= upTo,
// in key order, and whether more follow within the range.
func (l *entryLog) after(after, upTo uint64, limit int) ([]*histEntry, bool) {
	n := l.r.len()
	i := sort.Search(n, func(i int) bool { return l.keyOf(l.r.at(i)) > after })
	var out []*histEntry
	for ; i < n; i++ {
		e := l.r.at(i)
		if l.keyOf(e) > upTo {
			break
		}
		if e.evicted {
			continue
		}
		if len(out) == limit {
			return out, true
		}
		out = append(out, e)
	}
	return out, false
}

func entryIdx(e *histEntry) uint64 { return e.idx }
func entrySeq(e *histEntry) uint64 { return e.ev.Seq }

// history is the replica's recent events: a ring per stream (what a
// resuming client is replayed), an index in apply order (snapshot pages for
// a warming peer, and the globally oldest entry for the bounds) and one per
// origin in seq order (range reads for gap repair). It is bounded per
// stream (events, bytes), in all (streams holding history, bytes) and in
// age; the oldest go first. It has no lock of its own: the hub's lock
// serializes it.
type history struct {
	size           int
	age            time.Duration
	maxStreams     int
	maxBytes       int64
	maxStreamBytes int64

	// all holds every entry in apply order.
	all *entryLog
	// byOrigin holds each origin's entries in seq order.
	byOrigin map[string]*entryLog
	bytes    int64
	streams  int // streams holding at least one entry
	// evictedTotal counts entries that left history, for the metrics;
	// emptied is told of a stream whose last entry left.
	evictedTotal func(n int)
	emptied      func(ss *streamState)
}

func newHistory(size int, age time.Duration, evicted func(int)) *history {
	return &history{size: size, age: age, maxStreams: DefaultMaxHistoryStreams, maxBytes: DefaultMaxHistoryBytes,
		maxStreamBytes: DefaultMaxStreamHistoryBytes, all: newEntryLog(entryIdx), byOrigin: make(map[string]*entryLog), evictedTotal: evicted}
}

// add keeps e in ss's history and the indexes, and evicts what is past the
// bounds, oldest first.
func (h *history) add(ss *streamState, e *histEntry) {
	e.ss = ss
	if ss.hist.len() == 0 {
		h.streams++
	}
	ss.hist.push(e)
	sz := e.size()
	ss.bytes += sz
	h.bytes += sz
	h.all.push(e)
	if e.ev.Origin != "" {
		l := h.byOrigin[e.ev.Origin]
		if l == nil {
			l = newEntryLog(entrySeq)
			h.byOrigin[e.ev.Origin] = l
		}
		l.push(e)
	}
	n := 0
	for ss.hist.len() > h.size || (ss.bytes > h.maxStreamBytes && ss.hist.len() > 1) {
		h.evictFront(ss)
		n++
	}
	for (h.bytes > h.maxBytes || h.streams > h.maxStreams) && h.all.r.len() > 1 {
		h.evictFront(h.all.r.at(0).ss)
		n++
	}
	n += h.expire(e.at)
	if n > 0 && h.evictedTotal != nil {
		h.evictedTotal(n)
	}
}

// expire evicts the entries older than the age bound, oldest first: the
// cost is what is evicted, not the number of streams.
func (h *history) expire(now time.Time) int {
	if h.age <= 0 {
		return 0
	}
	cut := now.Add(-h.age)
	n := 0
	for h.all.r.len() > 0 && h.all.r.at(0).at.Before(cut) {
		h.evictFront(h.all.r.at(0).ss)
		n++
	}
	return n
}

// evictFront evicts ss's oldest entry.
func (h *history) evictFront(ss *streamState) {
	e := ss.hist.popFront()
	e.evicted = true
	e.ss = nil
	sz := e.size()
	ss.bytes -= sz
	h.bytes -= sz
	h.all.evicted()
	if e.ev.Origin != "" {
		if l := h.byOrigin[e.ev.Origin]; l != nil {
			l.evicted()
			if l.r.len() == 0 {
				delete(h.byOrigin, e.ev.Origin)
			}
		}
		if ss.evicted == nil {
			ss.evicted = make(map[string]uint64)
		}
		if e.ev.Seq > ss.evicted[e.ev.Origin] {
			ss.evicted[e.ev.Origin] = e.ev.Seq
		}
	}
	if ss.hist.len() == 0 {
		h.streams--
		if h.emptied != nil {
			h.emptied(ss)
		}
	}
}

// originRange returns up to limit held events of origin with after < seq
// <= upTo, in seq order, and whether more follow.
func (h *history) originRange(origin string, after, upTo uint64, limit int) ([]Event, bool) {
	l := h.byOrigin[origin]
	if l == nil {
		return nil, false
	}
	entries, more := l.after(after, upTo, limit)
	out := make([]Event, len(entries))
	for i, e := range entries {
		out[i] = e.ev
	}
	return out, more
}

// len is the number of events held.
func (h *history) len() int { return h.all.live() }

// streamState is one stream on this replica: its live subscribers and its
// recent history.
type streamState struct {
	// fanMu orders the fan-out of this stream's events to subs. An applier
	// takes it before it lets go of the hub's lock, so events reach the
	// stream's subscribers in apply order while other streams fan out at
	// the same time.
	fanMu sync.Mutex
	// subs are the subscribers of this stream alone. Changed with both the
	// hub's lock and fanMu held; read by the fan-out under fanMu.
	subs map[*subscriber]struct{}
	// sets are the sets of several streams, or patterns, that receive
	// this stream (see streamSet). Served under the hub's lock.
	sets  []*streamSet
	hist  ring
	name  string
	bytes int64 // of the entries in hist
	// evicted is, per origin, the highest seq that left this stream's history.
	// A client resuming from below it has lost events, and is told so.
	evicted map[string]uint64
	// pos is the stream's position: the replica's entries for the origins
	// that published to it within the history age, each as it was at that
	// origin's last event here. Its ids carry nothing else: an origin absent
	// from them published nothing to the stream.
	pos position
	// seen is when each origin of pos last published to the stream.
	seen map[string]time.Time
	// wsSubs counts the WebSocket subscribers in subs (under fanMu and the
	// hub's lock): while there are any, each event is also encoded for
	// them once.
	wsSubs int
	// retained is the stream's retained event (a clear when its frame is
	// nil), and retainedFrame its frame without an id, for new
	// subscribers.
	retained      *histEntry
	retainedFrame []byte
	// last is the frame fanned out last, the dictionary of the next one's
	// shared deflate (compression.go); kept only when the server compresses.
	last []byte
	// gzSubs counts the compressed subscribers in subs (under fanMu).
	gzSubs int
}

func newStreamState(name string) *streamState {
	return &streamState{name: name, subs: make(map[*subscriber]struct{})}
}

// idle reports whether the stream can be forgotten: no subscriber, no
// history, and no set that names it (pattern sets find it again when it
// comes back).
func (ss *streamState) idle() bool {
	if len(ss.subs) > 0 || ss.hist.len() > 0 || ss.retained != nil {
		return false
	}
	for _, s := range ss.sets {
		if _, named := slices.BinarySearch(s.names, ss.name); named {
			return false
		}
	}
	return true
}
