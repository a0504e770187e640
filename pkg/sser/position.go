package sser

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// position is what a holder (a replica, or a client through its last event
// id) has of each origin's events. It is immutable once built (copy on
// write), sorted by origin, and is what SSE event ids encode.
//
// For each origin it records the last seq and at most one hole: events
// given up as lost that the holder never got. The hole is why an id never
// claims an event its holder lacks, so a client that resumes elsewhere gets
// a lost event from a replica that still holds it. Two holes merge into the
// range spanning both: the id then under-claims (a resume may repeat a few
// events the client had) and never over-claims.
type position []originSeq

// originSeq is one origin's entry: every event with seq <= seq is held,
// except those with lo < seq <= hi. lo == hi means no hole.
type originSeq struct {
	origin string
	seq    uint64
	lo, hi uint64
}

// has reports whether the entry holds the event with seq s.
func (e originSeq) has(s uint64) bool { return s <= e.seq && (s <= e.lo || s > e.hi) }

func (e originSeq) hasHole() bool { return e.hi > e.lo }

// maxPositionOrigins bounds a parsed Last-Event-ID, so a hostile id cannot
// make the server allocate without limit.
const maxPositionOrigins = 1024

func (p position) find(origin string) (int, bool) {
	i := sort.Search(len(p), func(i int) bool { return p[i].origin >= origin })
	return i, i < len(p) && p[i].origin == origin
}

// entry is origin's entry, the zero entry (nothing held) when absent.
func (p position) entry(origin string) originSeq {
	if i, ok := p.find(origin); ok {
		return p[i]
	}
	return originSeq{origin: origin}
}

// get is the last seq of origin held, 0 when none.
func (p position) get(origin string) uint64 { return p.entry(origin).seq }

// has reports whether the event (origin, seq) is held.
func (p position) has(origin string, seq uint64) bool { return p.entry(origin).has(seq) }

// set returns a copy of p with e as its origin's entry.
func (p position) set(e originSeq) position {
	i, ok := p.find(e.origin)
	if ok {
		q := make(position, len(p))
		copy(q, p)
		q[i] = e
		return q
	}
	q := make(position, 0, len(p)+1)
	q = append(q, p[:i]...)
	q = append(q, e)
	return append(q, p[i:]...)
}

// with returns a copy of p with origin at seq, its hole kept.
func (p position) with(origin string, seq uint64) position {
	e := p.entry(origin)
	e.seq = seq
	return p.set(e)
}

// withHole returns a copy of p in which origin lacks the events
// lo < seq <= hi, and holds up to at least hi.
func (p position) withHole(origin string, lo, hi uint64) position {
	if hi <= lo {
		return p
	}
	e := p.entry(origin)
	if e.hasHole() {
		lo, hi = min(lo, e.lo), max(hi, e.hi)
	}
	e.lo, e.hi = lo, hi
	e.seq = max(e.seq, hi)
	return p.set(e)
}

// withoutHole returns a copy of p in which origin's hole is forgotten.
func (p position) withoutHole(origin string) position {
	e := p.entry(origin)
	if !e.hasHole() {
		return p
	}
	e.lo, e.hi = 0, 0
	return p.set(e)
}

// without returns p less the origins for which drop is true.
func (p position) without(drop func(origin string) bool) position {
	q := make(position, 0, len(p))
	for _, e := range p {
		if !drop(e.origin) {
			q = append(q, e)
		}
	}
	return q
}

// merge returns what a holder of both p and q has: per origin, an event is
// held when either holds it. A hole that the union does not fit in one
// range is widened, so the result never claims an event neither holds.
func (p position) merge(q position) position {
	out := make(position, 0, len(p)+len(q))
	i, j := 0, 0
	for i < len(p) || j < len(q) {
		switch {
		case j >= len(q) || (i < len(p) && p[i].origin < q[j].origin):
			out = append(out, p[i])
			i++
		case i >= len(p) || q[j].origin < p[i].origin:
			out = append(out, q[j])
			j++
		default:
			out = append(out, mergeEntry(p[i], q[j]))
			i++
			j++
		}
	}
	return out
}

// coversOwn reports whether p covers q on the origins p has.
func (p position) coversOwn(q position) bool {
	for _, a := range p {
		if j, ok := q.find(a.origin); ok && !(position{a}).covers(q[j:j+1]) {
			return false
		}
	}
	return true
}

// withHoles returns p with each hole of lacks added, on p's origins only:
// what lacks says the holder does not have, p no longer claims.
func (p position) withHoles(lacks position) position {
	for _, l := range lacks {
		if _, ok := p.find(l.origin); ok && l.hasHole() {
			p = p.withHole(l.origin, l.lo, l.hi)
		}
	}
	return p
}

// nothingPosition is a position that claims no event, written as the id
// of a subscription whose streams have had no event within the history
// age: a client holding it resumes (gets whatever its streams hold by
// then) instead of starting afresh, which would skip what was published
// while it was away. It is an ordinary element (origin's events up to 1,
// all lacking), so replicas of any version parse it.
func nothingPosition(origin string) position {
	return position{{origin: origin, seq: 1, lo: 0, hi: 1}}
}

// claimsNothing reports whether the entry claims no event of its origin.
func (e originSeq) claimsNothing() bool { return e.lo == 0 && e.hi == e.seq }

// span is the half-open seq range (lo, hi].
type span struct{ lo, hi uint64 }

// missing lists the ranges of (0, upTo] that e lacks.
func (e originSeq) missing(upTo uint64) []span {
	var out []span
	if e.hasHole() {
		out = append(out, span{e.lo, min(e.hi, upTo)})
	}
	if e.seq < upTo {
		out = append(out, span{e.seq, upTo})
	}
	return out
}

func mergeEntry(a, b originSeq) originSeq {
	m := originSeq{origin: a.origin, seq: max(a.seq, b.seq)}
	first := true
	for _, x := range a.missing(m.seq) {
		for _, y := range b.missing(m.seq) {
			lo, hi := max(x.lo, y.lo), min(x.hi, y.hi)
			if hi <= lo {
				continue
			}
			if first {
				m.lo, m.hi, first = lo, hi, false
			} else {
				m.lo, m.hi = min(m.lo, lo), max(m.hi, hi)
			}
		}
	}
	return m
}

// covers reports whether p holds every event that q holds.
func (p position) covers(q position) bool {
	for _, b := range q {
		a := p.entry(b.origin)
		if a.seq < b.seq {
			return false
		}
		// Whatever a lacks up to b.seq, b must lack too.
		if a.hasHole() {
			for _, x := range a.missing(b.seq) {
				if !b.lacksAll(x) {
					return false
				}
			}
		}
	}
	return true
}

// lacksAll reports whether e holds none of the events in x.
func (e originSeq) lacksAll(x span) bool {
	if x.hi <= x.lo {
		return true
	}
	if x.lo >= e.seq {
		return true
	}
	return e.hasHole() && x.lo >= e.lo && min(x.hi, e.seq) <= e.hi
}

// lacksSome reports whether e lacks any of the events in x.
func (e originSeq) lacksSome(x span) bool {
	if x.hi <= x.lo {
		return false
	}
	if x.hi > e.seq {
		return true
	}
	return e.hasHole() && max(x.lo, e.lo) < min(x.hi, e.hi)
}

// String encodes p compactly: "origin.seq" or, with a hole,
// "origin.seq.lo.hi" elements, numbers in base 36, joined by "-". Origins
// hold only [A-Za-z0-9_], so the encoding is unambiguous and has no
// character that needs escaping in a header or a query string.
func (p position) String() string {
	if len(p) == 0 {
		return ""
	}
	n := 0
	for _, e := range p {
		n += len(e.origin) + 15
	}
	b := make([]byte, 0, n)
	for i, e := range p {
		if i > 0 {
			b = append(b, '-')
		}
		b = append(b, e.origin...)
		b = append(b, '.')
		b = strconv.AppendUint(b, e.seq, 36)
		if e.hasHole() {
			b = append(b, '.')
			b = strconv.AppendUint(b, e.lo, 36)
			b = append(b, '.')
			b = strconv.AppendUint(b, e.hi, 36)
		}
	}
	return string(b)
}

// parsePosition decodes an id written by String.
func parsePosition(s string) (position, error) {
	if s == "" {
		return nil, nil
	}
	if n := strings.Count(s, "-") + 1; n > maxPositionOrigins {
		return nil, fmt.Errorf("more than %d origins", maxPositionOrigins)
	}
	parts := strings.Split(s, "-")
	p := make(position, 0, len(parts))
	for _, part := range parts {
		fields := strings.Split(part, ".")
		if (len(fields) != 2 && len(fields) != 4) || !validOrigin(fields[0]) {
			return nil, fmt.Errorf("malformed element %q", part)
		}
		e := originSeq{origin: fields[0]}
		var err error
		if e.seq, err = parseSeq36(fields[1]); err != nil || e.seq == 0 {
			return nil, fmt.Errorf("malformed seq in %q", part)
		}
		if len(fields) == 4 {
			e.lo, err = parseSeq36(fields[2])
			if err == nil {
				e.hi, err = parseSeq36(fields[3])
			}
			if err != nil || e.lo >= e.hi || e.hi > e.seq {
				return nil, fmt.Errorf("malformed hole in %q: want lo < hi <= seq", part)
			}
		}
		if n := len(p); n > 0 && p[n-1].origin >= e.origin {
			return nil, fmt.Errorf("origins not in strictly increasing order at %q", part)
		}
		p = append(p, e)
	}
	return p, nil
}

// parseSeq36 parses a canonical base-36 number (no sign, no leading zero).
func parseSeq36(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 36, 64)
	if err != nil || strconv.FormatUint(v, 36) != s {
		return 0, fmt.Errorf("malformed number %q", s)
	}
	return v, nil
}

// IDCovers reports whether a client holding the SSE event id has received
// the event with seq of origin: true when the id claims it. Every id this
// service writes claims only events its holder was sent.
func IDCovers(id, origin string, seq uint64) (bool, error) {
	p, err := parsePosition(strings.TrimSpace(id))
	if err != nil {
		return false, err
	}
	return p.has(origin, seq), nil
}
