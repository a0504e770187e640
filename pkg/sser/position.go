package sser

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// position is a replica's position vector: for each origin, the last seq this
// replica has applied. It is immutable once built (copy on write), sorted by
// origin, and is what SSE event ids encode.
type position []originSeq

type originSeq struct {
	origin string
	seq    uint64
}

// maxPositionOrigins bounds a parsed Last-Event-ID, so a hostile id cannot
// make the server allocate without limit.
const maxPositionOrigins = 1024

func (p position) get(origin string) uint64 {
	i := sort.Search(len(p), func(i int) bool { return p[i].origin >= origin })
	if i < len(p) && p[i].origin == origin {
		return p[i].seq
	}
	return 0
}

// with returns a copy of p with origin at seq.
func (p position) with(origin string, seq uint64) position {
	i := sort.Search(len(p), func(i int) bool { return p[i].origin >= origin })
	if i < len(p) && p[i].origin == origin {
		q := make(position, len(p))
		copy(q, p)
		q[i].seq = seq
		return q
	}
	q := make(position, 0, len(p)+1)
	q = append(q, p[:i]...)
	q = append(q, originSeq{origin, seq})
	return append(q, p[i:]...)
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

// merge returns the per-origin maximum of p and q.
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
			s := p[i].seq
			if q[j].seq > s {
				s = q[j].seq
			}
			out = append(out, originSeq{p[i].origin, s})
			i++
			j++
		}
	}
	return out
}

// covers reports whether p is at or past q for every origin of q.
func (p position) covers(q position) bool {
	for _, e := range q {
		if p.get(e.origin) < e.seq {
			return false
		}
	}
	return true
}

// String encodes p compactly: "origin.seq" pairs, seq in base 36, joined by
// "-". Origins hold only [A-Za-z0-9_], so the encoding is unambiguous and has
// no character that needs escaping in a header or a query string.
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
	}
	return string(b)
}

// parsePosition decodes an id written by String.
func parsePosition(s string) (position, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "-")
	if len(parts) > maxPositionOrigins {
		return nil, fmt.Errorf("more than %d origins", maxPositionOrigins)
	}
	p := make(position, 0, len(parts))
	for _, part := range parts {
		origin, seqText, ok := strings.Cut(part, ".")
		if !ok || !validOrigin(origin) {
			return nil, fmt.Errorf("malformed element %q", part)
		}
		seq, err := strconv.ParseUint(seqText, 36, 64)
		if err != nil || seq == 0 || strconv.FormatUint(seq, 36) != seqText {
			return nil, fmt.Errorf("malformed seq in %q", part)
		}
		if n := len(p); n > 0 && p[n-1].origin >= origin {
			return nil, fmt.Errorf("origins not in strictly increasing order at %q", part)
		}
		p = append(p, originSeq{origin, seq})
	}
	return p, nil
}
