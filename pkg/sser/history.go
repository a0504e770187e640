package sser

import (
	"sync"
	"time"
)

// histEntry is one applied event as this replica delivered it.
type histEntry struct {
	idx   uint64 // apply order on this replica, across streams
	ev    Event
	pos   position // the replica's position right after this event
	frame []byte   // the frame as sent live; replays reuse it
	at    time.Time
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
	// multi are subscribers of several streams. They are served under the
	// hub's lock, which keeps one apply order across all their streams.
	multi map[*subscriber]struct{}
	hist  ring
	// evicted is, per origin, the highest seq that left this stream's history.
	// A client resuming from below it has lost events, and is told so.
	evicted map[string]uint64
}

func (ss *streamState) evictFront() {
	e := ss.hist.popFront()
	if e.ev.Origin == "" {
		return
	}
	if ss.evicted == nil {
		ss.evicted = make(map[string]uint64)
	}
	if e.ev.Seq > ss.evicted[e.ev.Origin] {
		ss.evicted[e.ev.Origin] = e.ev.Seq
	}
}

// trim evicts entries past the size limit or older than the age limit.
func (ss *streamState) trim(size int, age time.Duration, now time.Time) int {
	n := 0
	for ss.hist.len() > size {
		ss.evictFront()
		n++
	}
	if age > 0 {
		cut := now.Add(-age)
		for ss.hist.len() > 0 && ss.hist.at(0).at.Before(cut) {
			ss.evictFront()
			n++
		}
	}
	return n
}

func newStreamState() *streamState {
	return &streamState{subs: make(map[*subscriber]struct{}), multi: make(map[*subscriber]struct{})}
}

func (ss *streamState) idle() bool {
	return len(ss.subs) == 0 && len(ss.multi) == 0 && ss.hist.len() == 0
}
