package sser

import (
	"strings"
	"testing"
)

func TestPositionRoundTrip(t *testing.T) {
	var p position
	p = p.with("b", 36).with("a", 1).with("c", 1<<40).with("a", 2)
	s := p.String()
	if s != "a.2-b.10-c.dlvtqzoqo" && !strings.HasPrefix(s, "a.2-b.10-c.") {
		t.Fatalf("String = %q", s)
	}
	q, err := parsePosition(s)
	if err != nil {
		t.Fatal(err)
	}
	if q.String() != s {
		t.Errorf("round trip %q -> %q", s, q.String())
	}
	if q.get("a") != 2 || q.get("b") != 36 || q.get("c") != 1<<40 || q.get("zz") != 0 {
		t.Errorf("get wrong: %v", q)
	}
}

func TestParsePositionErrors(t *testing.T) {
	for _, in := range []string{"x", "a.5.3", "a.5.3.3", "a.5.4.3", "a.5.0.6", "a.5.01.3", "a.", ".1", "a.0", "a.1-a.2", "b.1-a.1", "a-b.1", "a.1--b.2", "a.!!", "a b.1", "a.1\n", strings.Repeat("a.1-", maxPositionOrigins+1)} {
		t.Run(in, func(t *testing.T) {
			if _, err := parsePosition(in); err == nil {
				t.Errorf("parsePosition(%q) accepted it", in)
			}
		})
	}
}

func TestPositionMergeCovers(t *testing.T) {
	p := position{}.with("a", 5).with("c", 1)
	q := position{}.with("a", 3).with("b", 9)
	m := p.merge(q)
	if m.String() != "a.5-b.9-c.1" {
		t.Errorf("merge = %s", m)
	}
	if !m.covers(p) || !m.covers(q) || p.covers(q) {
		t.Errorf("covers wrong")
	}
	d := m.without(func(o string) bool { return o == "b" })
	if d.String() != "a.5-c.1" {
		t.Errorf("without = %s", d)
	}
}

func TestPositionHoles(t *testing.T) {
	p := position{}.with("a", 10).withHole("a", 3, 6)
	if s := p.String(); s != "a.a.3.6" {
		t.Fatalf("String = %q", s)
	}
	q, err := parsePosition(p.String())
	if err != nil || q.String() != p.String() {
		t.Fatalf("round trip: %v %v", q, err)
	}
	for seq, want := range map[uint64]bool{1: true, 3: true, 4: false, 6: false, 7: true, 10: true, 11: false} {
		if got := p.has("a", seq); got != want {
			t.Errorf("has(a, %d) = %v, want %v", seq, got, want)
		}
	}
	// Advancing keeps the hole; a second hole widens it.
	p = p.with("a", 20).withHole("a", 12, 14)
	if e := p.entry("a"); e.lo != 3 || e.hi != 14 || e.seq != 20 {
		t.Errorf("widened entry = %+v", e)
	}
	if p.withoutHole("a").String() != "a.k" {
		t.Errorf("withoutHole = %s", p.withoutHole("a"))
	}
}

func TestPositionHoleMergeNeverOverClaims(t *testing.T) {
	tests := []struct {
		name string
		p, q position
	}{
		{"hole and none", position{}.with("a", 10).withHole("a", 3, 6), position{}.with("a", 4)},
		{"two holes", position{}.with("a", 10).withHole("a", 3, 6), position{}.with("a", 12).withHole("a", 5, 9)},
		{"disjoint holes", position{}.with("a", 10).withHole("a", 1, 2), position{}.with("a", 10).withHole("a", 7, 9)},
		{"hole past the other's end", position{}.with("a", 20).withHole("a", 12, 15), position{}.with("a", 8)},
		{"other origin", position{}.with("a", 5).withHole("a", 1, 3), position{}.with("b", 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.p.merge(tt.q)
			if _, err := parsePosition(m.String()); err != nil {
				t.Fatalf("merge %s does not parse: %v", m, err)
			}
			for _, o := range []string{"a", "b"} {
				for s := uint64(1); s <= 25; s++ {
					either := tt.p.has(o, s) || tt.q.has(o, s)
					if m.has(o, s) && !either {
						t.Errorf("merge %s claims %s.%d that neither %s nor %s holds", m, o, s, tt.p, tt.q)
					}
				}
			}
			if !m.covers(tt.p) && !tt.p.entry("a").hasHole() && !tt.q.entry("a").hasHole() {
				t.Errorf("merge %s does not cover %s", m, tt.p)
			}
		})
	}
}

func TestPositionCoversWithHoles(t *testing.T) {
	full := position{}.with("a", 10)
	holed := position{}.with("a", 10).withHole("a", 3, 6)
	if holed.covers(full) {
		t.Error("a position with a hole covers one without")
	}
	if !full.covers(holed) {
		t.Error("a full position does not cover a holed one")
	}
	if !holed.covers(position{}.with("a", 3)) || holed.covers(position{}.with("a", 4)) {
		t.Error("covers wrong at the hole's edge")
	}
	for _, c := range []struct {
		id   string
		seq  uint64
		want bool
	}{{"a.a.3.6", 4, false}, {"a.a.3.6", 7, true}, {"a.a", 11, false}, {"b.1", 1, false}} {
		got, err := IDCovers(c.id, "a", c.seq)
		if err != nil || got != c.want {
			t.Errorf("IDCovers(%q, a, %d) = %v, %v; want %v", c.id, c.seq, got, err, c.want)
		}
	}
}
