package sser

import (
	"fmt"
	"sync"
	"time"
)

// outbox holds the events this replica originated, in seq order, and is the
// source of truth for them: every peer's sender is a cursor over it,
// advanced when the peer acknowledges a batch, and repairs of this origin
// read from it. It is bounded in events and bytes. When the oldest event
// would have to go while a peer has not acknowledged it, publishers get
// back-pressure first; a peer that holds them back for longer than cutoff
// is cut off: its cursor skips what is no longer held, and the peer, told
// by the lowest seq held on every batch, reports the loss to its
// subscribers.
type outbox struct {
	maxEvents int
	maxBytes  int64
	cutoff    time.Duration
	now       func() time.Time

	mu      sync.Mutex
	buf     []Event // ring
	head, n int
	first   uint64 // seq of the oldest held event (buf[head]); last+1 when empty
	last    uint64 // seq of the newest event appended
	bytes   int64
	cursors map[string]*cursor
	// pressured counts cursors with pressureSince set.
	pressured int
}

// cursor is one peer's place in the outbox.
type cursor struct {
	acked uint64 // every seq up to acked was accepted by the peer (or skipped)
	// pressureSince is when this peer first held a publish back, in the
	// current run of back-pressure; zero when it does not.
	pressureSince time.Time
	// cut is set while the peer is cut off: it holds nothing back and
	// skips what is evicted, until it is back within half the outbox.
	cut     bool
	skipped uint64
}

// cutoffNote reports a peer cut off by a publish, and how far behind it was.
type cutoffNote struct {
	peer string
	lag  uint64
}

func newOutbox(maxEvents int, maxBytes int64, cutoff time.Duration) *outbox {
	return &outbox{maxEvents: maxEvents, maxBytes: maxBytes, cutoff: cutoff, now: time.Now,
		first: 1, cursors: make(map[string]*cursor)}
}

func eventBytes(ev *Event) int64 { return int64(len(ev.Msg) + len(ev.Stream) + len(ev.Event) + 64) }

// backPressureError names the peer holding publishers back.
type backPressureError struct {
	peer string
	lag  uint64
}

func (e *backPressureError) Error() string {
	return fmt.Sprintf("%s: peer %s is %d events behind", ErrBackPressure.Error(), e.peer, e.lag)
}

func (e *backPressureError) Unwrap() error { return ErrBackPressure }

// add stamps events with the next seqs and appends them, making room by
// evicting events every peer has acknowledged. It fails with
// ErrBackPressure when room cannot be made yet; nothing is appended then.
func (o *outbox) add(origin string, events []Event) ([]cutoffNote, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var need int64
	for i := range events {
		need += eventBytes(&events[i])
	}
	cutoffs, err := o.makeRoomLocked(len(events), need)
	if err != nil {
		return cutoffs, err
	}
	for i := range events {
		o.last++
		events[i].Origin, events[i].Seq = origin, o.last
		o.pushLocked(events[i])
	}
	return cutoffs, nil
}

func (o *outbox) makeRoomLocked(n int, nb int64) ([]cutoffNote, error) {
	var cutoffs []cutoffNote
	now := o.now()
	for o.n > 0 && (o.n+n > o.maxEvents || o.bytes+nb > o.maxBytes) {
		oldest := o.first
		var blocker string
		var blocking *cursor
		for peer, c := range o.cursors {
			if c.cut || c.acked >= oldest {
				continue
			}
			// The furthest behind holds publishers back; among peers
			// equally behind, the one already doing so, so its time
			// runs on instead of starting again with another.
			if blocking == nil || c.acked < blocking.acked ||
				(c.acked == blocking.acked && !c.pressureSince.IsZero() && (blocking.pressureSince.IsZero() || c.pressureSince.Before(blocking.pressureSince))) {
				blocker, blocking = peer, c
			}
		}
		if blocking != nil {
			if blocking.pressureSince.IsZero() {
				blocking.pressureSince = now
				o.pressured++
			}
			if now.Sub(blocking.pressureSince) < o.cutoff {
				return cutoffs, &backPressureError{peer: blocker, lag: o.last - blocking.acked}
			}
			// Cut off: from now on the peer skips what is evicted, and
			// learns from each batch's heldFrom what it missed.
			blocking.cut = true
			blocking.pressureSince = time.Time{}
			o.pressured--
			cutoffs = append(cutoffs, cutoffNote{peer: blocker, lag: o.last - blocking.acked})
			continue // another peer may lag too: it gets its own time
		}
		// Only cut-off peers lag here: they skip what goes.
		for _, c := range o.cursors {
			if c.acked < oldest {
				c.acked = oldest
				c.skipped++
			}
		}
		o.popLocked()
	}
	if o.pressured > 0 {
		// Nobody is holding publishers back any more.
		for _, c := range o.cursors {
			if !c.pressureSince.IsZero() && c.acked >= o.first-1 {
				c.pressureSince = time.Time{}
				o.pressured--
			}
		}
	}
	return cutoffs, nil
}

func (o *outbox) pushLocked(ev Event) {
	if o.n == len(o.buf) {
		nb := make([]Event, max(64, 2*len(o.buf)))
		for i := 0; i < o.n; i++ {
			nb[i] = o.buf[(o.head+i)%len(o.buf)]
		}
		o.buf, o.head = nb, 0
	}
	o.buf[(o.head+o.n)%len(o.buf)] = ev
	o.n++
	o.bytes += eventBytes(&ev)
}

func (o *outbox) popLocked() {
	o.bytes -= eventBytes(&o.buf[o.head])
	o.buf[o.head] = Event{}
	o.head = (o.head + 1) % len(o.buf)
	o.n--
	o.first++
	if o.n == 0 {
		o.head = 0
		if len(o.buf) > 1024 {
			o.buf = nil // give a burst's memory back
		}
	}
}

// read returns up to limit held events with seq > after and <= upTo, and
// heldFrom, the lowest seq held: events after..heldFrom-1 are gone.
func (o *outbox) read(after, upTo uint64, limit int) (events []Event, heldFrom uint64, last uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	from := max(after+1, o.first)
	for s := from; s <= upTo && s <= o.last && len(events) < limit; s++ {
		events = append(events, o.buf[(o.head+int(s-o.first))%len(o.buf)])
	}
	return events, o.first, o.last
}

// next is what the peer's sender sends next: up to limit events after
// what the peer acknowledged, and the lowest seq held.
func (o *outbox) next(peer string, limit int) ([]Event, uint64) {
	return o.nextAfter(peer, 0, limit)
}

// nextAfter is next for a sender that has events in flight: up to limit
// events after seq after (what it sent so far, ahead of what the peer
// acknowledged), and the lowest seq held. Nothing once the peer is gone.
func (o *outbox) nextAfter(peer string, after uint64, limit int) ([]Event, uint64) {
	o.mu.Lock()
	c := o.cursors[peer]
	if c == nil {
		o.mu.Unlock()
		return nil, 0
	}
	after = max(after, c.acked)
	o.mu.Unlock()
	events, heldFrom, _ := o.read(after, ^uint64(0), limit)
	return events, heldFrom
}

// acked is what peer acknowledged so far (0 when it has no cursor).
func (o *outbox) acked(peer string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.cursors[peer]; c != nil {
		return c.acked
	}
	return 0
}

// ack records that peer accepted every event up to seq.
func (o *outbox) ack(peer string, seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.cursors[peer]; c != nil && seq > c.acked {
		c.acked = seq
		if c.cut && o.last-c.acked <= uint64(o.maxEvents/2) {
			c.cut = false
		}
	}
}

// addPeer starts a cursor for peer at the newest event: what came before
// it reaches the peer through its warm-up or a repair.
func (o *outbox) addPeer(peer string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cursors[peer] == nil {
		o.cursors[peer] = &cursor{acked: o.last}
	}
}

func (o *outbox) removePeer(peer string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.cursors[peer]; c != nil {
		if !c.pressureSince.IsZero() {
			o.pressured--
		}
		delete(o.cursors, peer)
	}
}

// lag is how many events peer has not acknowledged.
func (o *outbox) lag(peer string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.cursors[peer]; c != nil {
		return o.last - c.acked
	}
	return 0
}

// length is how many events are held.
func (o *outbox) length() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}
