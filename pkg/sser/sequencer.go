package sser

import (
	"fmt"
	"slices"
	"time"
)

// Bounds on the events held back behind gaps while they are repaired. Past
// them an event is not held but left to the repair: its origin still has it.
const (
	maxPendingPerOrigin = 10000
	maxPendingTotal     = 100000
)

// originState is what this replica knows of one origin.
type originState struct {
	// last is the highest seq applied; every seq up to it is applied or
	// given up as lost.
	last uint64
	// base: this replica never knew the seqs at or below it that it did not
	// apply (it first heard of the origin after them). A client resuming from
	// below base may have missed events, and is told so.
	base uint64
	// want is the highest seq known to exist: from an event held behind a
	// gap, a peer's notes, or the origin itself. Repairs aim at it.
	want uint64
	// heldFrom is the lowest seq the origin said it still holds (0 when it
	// has not said): anything below it can only come from other replicas.
	heldFrom uint64
	lastAt   time.Time
	// lostAt is when a range of this origin was last given up here.
	lostAt time.Time
	// pending holds events that arrived after a gap, until it is repaired.
	pending map[uint64]Event
	// inPosition is false once the origin has been idle longer than the
	// history age and dropped from ids.
	inPosition bool
}

// sequencer puts each origin's events in seq order: duplicates are dropped,
// an event past a gap waits, and giving a gap up costs what is held behind
// it, never the size of the gap. It is a plain data structure: the hub's
// lock serializes it.
type sequencer struct {
	origins map[string]*originState
	pending int // events held behind gaps, across origins
}

func newSequencer() *sequencer { return &sequencer{origins: make(map[string]*originState)} }

// offerResult says what became of an offered event.
type offerResult int

const (
	offerApply     offerResult = iota // in order: apply it (then drain)
	offerDuplicate                    // already applied or held
	offerHeld                         // past a gap: held until it is repaired
	offerDeferred                     // past a gap, and over the holding bounds: left to the repair
)

// state returns origin's state, creating it so that ev.Seq is next when
// the origin is new here.
func (q *sequencer) state(origin string, firstSeq uint64) *originState {
	st := q.origins[origin]
	if st == nil {
		st = &originState{last: firstSeq - 1, base: firstSeq - 1}
		q.origins[origin] = st
	}
	return st
}

// checkJump refuses an event further ahead of what is applied than maxGap:
// no outbox could repair such a gap. heldFrom, when the origin gives it,
// moves the start forward: it no longer holds anything before it.
func (q *sequencer) checkJump(ev *Event, heldFrom, maxGap uint64) error {
	st := q.origins[ev.Origin]
	if st == nil || maxGap == 0 {
		return nil
	}
	start := st.last
	if heldFrom > 0 {
		start = max(start, heldFrom-1)
	}
	if ev.Seq > start && ev.Seq-start > maxGap {
		return fmt.Errorf("%w: seq %d of origin %s is %d past the last applied (%d); at most %d", ErrSeqJump, ev.Seq, ev.Origin, ev.Seq-start, st.last, maxGap)
	}
	return nil
}

// offer places ev. With offerApply the caller applies ev and then calls
// next until it returns false.
func (q *sequencer) offer(ev Event, now time.Time) (*originState, offerResult) {
	st := q.state(ev.Origin, ev.Seq)
	st.lastAt = now
	switch {
	case ev.Seq <= st.last:
		return st, offerDuplicate
	case ev.Seq == st.last+1:
		st.last = ev.Seq
		return st, offerApply
	}
	st.want = max(st.want, ev.Seq-1)
	if _, dup := st.pending[ev.Seq]; dup {
		return st, offerDuplicate
	}
	if len(st.pending) >= maxPendingPerOrigin || q.pending >= maxPendingTotal {
		return st, offerDeferred
	}
	if st.pending == nil {
		st.pending = make(map[uint64]Event)
	}
	st.pending[ev.Seq] = ev
	q.pending++
	return st, offerHeld
}

// next takes the held event that is now in order, if any.
func (q *sequencer) next(st *originState) (Event, bool) {
	ev, ok := st.pending[st.last+1]
	if !ok {
		if len(st.pending) == 0 {
			st.pending = nil
		}
		return Event{}, false
	}
	delete(st.pending, ev.Seq)
	q.pending--
	st.last = ev.Seq
	return ev, true
}

// giveUp stops waiting for origin's events up to upTo. In seq order it
// calls lose for each range that did not arrive and apply for each held
// event, then leaves st.last at upTo or past it. The cost is the number of
// held events, whatever the size of the gap.
func (q *sequencer) giveUp(st *originState, upTo uint64, lose func(lo, hi uint64), apply func(Event)) {
	if upTo <= st.last {
		return
	}
	var held []uint64
	for s := range st.pending {
		if s <= upTo {
			held = append(held, s)
		}
	}
	slices.Sort(held)
	for _, s := range held {
		if s-1 > st.last {
			lose(st.last, s-1)
		}
		ev := st.pending[s]
		delete(st.pending, s)
		q.pending--
		st.last = s
		apply(ev)
	}
	if upTo > st.last {
		lose(st.last, upTo)
		st.last = upTo
	}
	for {
		ev, ok := q.next(st)
		if !ok {
			break
		}
		apply(ev)
	}
}

// gap is what origin lacks now: (after, upTo], or ok false when nothing.
func (q *sequencer) gap(origin string) (after, upTo uint64, ok bool) {
	st := q.origins[origin]
	if st == nil {
		return 0, 0, false
	}
	upTo = st.want
	if len(st.pending) > 0 {
		low := uint64(0)
		for s := range st.pending {
			if low == 0 || s < low {
				low = s
			}
		}
		upTo = max(upTo, low-1)
	}
	if upTo <= st.last {
		return st.last, st.last, false
	}
	return st.last, upTo, true
}
