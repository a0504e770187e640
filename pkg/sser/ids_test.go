package sser

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// frameIDs returns the id lines of frames, in order.
func frameIDs(frames [][]byte) []string { return frameField(frames, "id") }

// frameField returns the values of the field lines of frames, in order.
func frameField(frames [][]byte, field string) []string {
	var out []string
	for _, f := range frames {
		for _, l := range strings.Split(string(f), "\n") {
			if v, ok := strings.CutPrefix(l, field+": "); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// frameDatas returns the data lines of event frames (not sser-* notices).
func frameDatas(frames [][]byte) []string {
	var out []string
	for _, f := range frames {
		if strings.Contains(string(f), "event: sser-") {
			continue
		}
		for _, l := range strings.Split(string(f), "\n") {
			if d, ok := strings.CutPrefix(l, "data: "); ok {
				out = append(out, d)
			}
		}
	}
	return out
}

func subscribeHub(t *testing.T, h *hub, id string, streams ...string) *subscriber {
	t.Helper()
	from, err := parsePosition(id)
	if err != nil {
		t.Fatal(err)
	}
	sub := newSubscriber(streams, 1000)
	if _, ok := h.subscribe(sub, from, id != "", 1000); !ok {
		t.Fatal("subscribe refused")
	}
	return sub
}

// An id carries the origins that published to the subscriber's streams,
// not every origin the replica knows: 50 publishers on 50 other streams
// leave a one-stream subscriber's ids as short as with one publisher.
func TestIDsCarryOnlyTheStreamsOrigins(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	for i := range 50 {
		h.apply([]Event{{Stream: fmt.Sprintf("other%d", i), Msg: "m", Origin: fmt.Sprintf("origin%02dabcdef", i), Seq: 1}}, "peer")
	}
	sub := subscribeHub(t, h, "", "fresh")
	h.apply([]Event{{Stream: "fresh", Msg: "hello", Origin: "origin07abcdef", Seq: 2}}, "peer")
	ids := frameIDs(sub.take())
	if len(ids) != 2 {
		t.Fatalf("ids %q, want the connect id and one event's", ids)
	}
	if ids[1] != "origin07abcdef.2" || len(ids[1]) > 32 {
		t.Errorf("event id %q (%d bytes), want only the one origin that published to the stream", ids[1], len(ids[1]))
	}
	if len(h.pos) != 50 {
		t.Errorf("the replica's position has %d origins, want all 50 (it still knows every origin)", len(h.pos))
	}
}

// A subscription to streams with no event yet gets an id that claims
// nothing, so a client that goes away before its first event resumes
// (and gets what was published meanwhile) rather than starting afresh.
func TestEmptyStreamsIDClaimsNothingAndResumes(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	h.self = "self"
	h.apply([]Event{{Stream: "busy", Msg: "m", Origin: "o", Seq: 1}}, "peer")
	sub := subscribeHub(t, h, "", "quiet")
	ids := frameIDs(sub.take())
	if len(ids) != 1 {
		t.Fatalf("connect ids %q, want one", ids)
	}
	if covers, err := IDCovers(ids[0], "o", 1); err != nil || covers {
		t.Fatalf("connect id %q claims o.1 (err %v)", ids[0], err)
	}
	h.unsubscribe(sub)
	h.apply([]Event{{Stream: "quiet", Msg: "missed", Origin: "o", Seq: 2}}, "peer")
	again := subscribeHub(t, h, ids[0], "quiet")
	if got := frameDatas(again.take()); len(got) != 1 || got[0] != "missed" {
		t.Errorf("resume from the empty id replayed %q, want the one event published meanwhile", got)
	}
}

// A subscriber of several streams gets ids covering all of them, and a
// resume from any id it was given, mid-replay included, is exact.
func TestMultiStreamIDsMergeTheirStreams(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	apply := func(stream, origin string, seq uint64) {
		h.apply([]Event{{Stream: stream, Msg: fmt.Sprintf("%s/%s.%d", stream, origin, seq), Origin: origin, Seq: seq}}, "peer")
	}
	apply("a", "x", 1)
	apply("b", "y", 1)
	apply("c", "z", 1) // a stream the subscriber does not read
	sub := subscribeHub(t, h, "", "a", "b")
	apply("a", "x", 2)
	apply("c", "z", 2)
	apply("b", "y", 2)
	frames := sub.take()
	ids := frameIDs(frames)
	if want := []string{"x.1-y.1", "x.2-y.1", "x.2-y.2"}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("ids %q, want %q", ids, want)
	}
	h.unsubscribe(sub)
	// Missed while away, on both streams, interleaved.
	apply("b", "y", 3)
	apply("a", "x", 3)
	apply("b", "x", 4)
	apply("a", "y", 4)
	want := []string{"b/y.3", "a/x.3", "b/x.4", "a/y.4"}
	// Resume from the last id, then from each replayed id in turn: every
	// resume gets exactly the rest.
	id := ids[len(ids)-1]
	for i := range want {
		again := subscribeHub(t, h, id, "a", "b")
		got := again.take()
		if datas := frameDatas(got); strings.Join(datas, " ") != strings.Join(want[i:], " ") {
			t.Fatalf("resume from %q replayed %q, want %q", id, datas, want[i:])
		}
		id = frameIDs(got)[0]
		h.unsubscribe(again)
	}
}

// A client whose id holds an origin's event on this stream that this
// replica has not applied yet (in flight), while it knows the origin from
// other streams, keeps that origin in every id it is sent, and is not sent
// the event again when it arrives.
func TestAheadOriginStaysInIDsUntilApplied(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	h.apply([]Event{{Stream: "elsewhere", Msg: "m", Origin: "y", Seq: 1}}, "peer")
	h.apply([]Event{{Stream: "a", Msg: "z1", Origin: "z", Seq: 1}}, "peer")
	// Written by a replica that has y.2, on stream a.
	sub := subscribeHub(t, h, "y.2-z.1", "a")
	sub.take()
	h.apply([]Event{{Stream: "a", Msg: "z2", Origin: "z", Seq: 2}}, "peer")
	ids := frameIDs(sub.take())
	if len(ids) != 1 || ids[0] != "y.2-z.2" {
		t.Fatalf("ids %q, want y kept: the client has y.2", ids)
	}
	h.apply([]Event{{Stream: "a", Msg: "y2", Origin: "y", Seq: 2}}, "peer")
	h.apply([]Event{{Stream: "a", Msg: "z3", Origin: "z", Seq: 3}}, "peer")
	frames := sub.take()
	if got := frameDatas(frames); len(got) != 1 || got[0] != "z3" {
		t.Errorf("delivered %q, want only z3 (the client had y2)", got)
	}
	if ids := frameIDs(frames); len(ids) != 1 || ids[0] != "y.2-z.3" {
		t.Errorf("ids %q, want the stream's own position once it covers the client", ids)
	}
}

// Ids that name every origin of the replica, as earlier versions wrote
// them, are still accepted, and the resume is exact.
func TestResumeFromAWholeReplicaID(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	for i := range 5 {
		h.apply([]Event{{Stream: "other", Msg: "m", Origin: fmt.Sprintf("o%d", i), Seq: 1}}, "peer")
	}
	h.apply([]Event{{Stream: "a", Msg: "a1", Origin: "o0", Seq: 2}}, "peer")
	old := "o0.2-o1.1-o2.1-o3.1-o4.1"
	h.apply([]Event{{Stream: "a", Msg: "a2", Origin: "o3", Seq: 2}}, "peer")
	sub := subscribeHub(t, h, old, "a")
	frames := sub.take()
	if got := frameDatas(frames); len(got) != 1 || got[0] != "a2" {
		t.Fatalf("replayed %q, want a2 only", got)
	}
	ids := frameIDs(frames)
	if last := ids[len(ids)-1]; last != "o0.2-o3.2" {
		t.Errorf("id after resume %q, want the stream's origins only", last)
	}
}

// A stream's id drops an origin that has not published to it for the
// history age, even while that origin publishes elsewhere.
func TestStreamIDsForgetOriginsQuietOnThem(t *testing.T) {
	h, now := testHub(100, time.Minute)
	h.apply([]Event{{Stream: "a", Msg: "m", Origin: "x", Seq: 1}}, "peer")
	h.apply([]Event{{Stream: "a", Msg: "m", Origin: "y", Seq: 1}}, "peer")
	for i := uint64(2); i <= 3; i++ {
		*now = now.Add(40 * time.Second)
		h.apply([]Event{{Stream: "b", Msg: "m", Origin: "x", Seq: i}}, "peer")
		h.apply([]Event{{Stream: "a", Msg: "m", Origin: "y", Seq: i}}, "peer")
	}
	h.sweep()
	sub := subscribeHub(t, h, "", "a")
	if ids := frameIDs(sub.take()); len(ids) != 1 || ids[0] != "y.3" {
		t.Errorf("stream a's id %q, want x dropped (quiet on a for 80s, age 60s)", ids)
	}
}
