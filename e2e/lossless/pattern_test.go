package lossless

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/sser-dev/sser/pkg/client"
)

// A pattern subscriber gets the matching streams, including one created
// while it was away, resumes exactly on another replica, and never gets an
// event of a stream the pattern does not match.
func TestPatternSubscriberResumesOnAnotherReplica(t *testing.T) {
	skipShort(t)
	c := newCluster(t, 3)
	c.startAll()
	pub := func(i int, stream string, from, to int) []string {
		t.Helper()
		var want []string
		for n := from; n < to; n++ {
			msg := fmt.Sprintf("%s-%d", stream, n)
			body := fmt.Sprintf(`{"stream":%q,"msg":%q}`, stream, msg)
			if err := postJSON(t.Context(), http.DefaultClient, c.internalURL(i)+"/api/json/v1/publish", body); err != nil {
				t.Fatalf("publish %s on replica %d: %v", msg, i, err)
			}
			want = append(want, stream+" "+msg)
		}
		return want
	}
	u := func(i int) string { return c.frontendURL(i) + "/events?stream=" + url.QueryEscape("p/*") }

	a := subscribe(t, "a@r0", u(0))
	waitFor(t, deadline, "a to connect", func() bool { n, _, _ := a.connections(); return n == 1 })
	var before []string
	before = append(before, pub(0, "p/a", 0, 5)...)
	before = append(before, pub(1, "p/b", 0, 5)...)
	pub(2, "q/x", 0, 5)
	pub(0, "p/a/deep", 0, 2)
	waitAll(t, deadline, []*recorder{a}, len(before))
	_ = a.s.Close()
	id := a.s.LastEventID()

	var missed []string
	missed = append(missed, pub(1, "p/new", 0, 5)...) // a stream that did not exist
	missed = append(missed, pub(2, "p/a", 5, 10)...)
	pub(0, "q/x", 5, 10)
	b := subscribe(t, "b@r2", u(2), client.WithLastEventID(id))
	waitAll(t, deadline, []*recorder{b}, len(missed))
	live := pub(0, "p/c", 0, 3)
	waitAll(t, deadline, []*recorder{b}, len(missed)+len(live))

	if got := a.messages(); !sameSet(got, before) {
		t.Errorf("before the move: %q, want %q", got, before)
	}
	got := b.messages()
	if !sameSet(got[:len(missed)], missed) {
		t.Errorf("replay on r2 = %q, want exactly %q", got[:len(missed)], missed)
	}
	if !sameSet(got, append(slices.Clone(missed), live...)) {
		t.Errorf("after the move: %q, want the missed then live events only", got)
	}
	for _, m := range append(a.messages(), got...) {
		if !strings.HasPrefix(m, "p/") || strings.HasPrefix(m, "p/a/deep") {
			t.Errorf("event of a stream the pattern does not match: %q", m)
		}
	}
	if _, res, lost := b.connections(); !slices.Equal(res, []string{"exact"}) || len(lost) != 0 {
		t.Errorf("resume on r2: X-Sser-Resume %q, sser-lost %q; want [exact] and none", res, lost)
	}
}
