package sser

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/pkg/auth"
)

func subscribeSet(t *testing.T, h *hub, id string, format frameFormat, allow func(string) bool, params ...string) *subscriber {
	t.Helper()
	from, err := parsePosition(id)
	if err != nil {
		t.Fatal(err)
	}
	names, patterns, err := splitPatterns(params)
	if err != nil {
		t.Fatal(err)
	}
	sub := newSubscriber(names, 1000)
	grants := ""
	if allow != nil {
		grants = "test"
	}
	sub.selectSet(patterns, format, allow, grants)
	if _, ok := h.subscribe(sub, from, id != "", 1000); !ok {
		t.Fatal("subscribe refused")
	}
	return sub
}

// frameStreams returns the stream field of each event frame.
func frameStreams(frames [][]byte) []string { return frameField(frames, "stream") }

func applyOne(h *hub, stream, origin string, seq uint64) {
	h.apply([]Event{{Stream: stream, Msg: fmt.Sprintf("%s/%s.%d", stream, origin, seq), Origin: origin, Seq: seq}}, "peer")
}

// A pattern subscriber gets the matching streams that exist and those that
// appear later, each frame naming its stream, and nothing else: * does not
// cross a '/'.
func TestPatternMatchesStreamsNowAndLater(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	applyOne(h, "prices/a", "x", 1)
	sub := subscribeSet(t, h, "", formatPlain, nil, "prices/*")
	applyOne(h, "prices/b", "x", 2)      // new stream
	applyOne(h, "other/b", "x", 3)       // no match
	applyOne(h, "prices/b/deep", "x", 4) // * stops at '/'
	applyOne(h, "prices", "x", 5)        // no match
	applyOne(h, "prices/a", "y", 1)
	frames := sub.take()
	if got, want := frameDatas(frames), []string{"prices/b/x.2", "prices/a/y.1"}; !slices.Equal(got, want) {
		t.Fatalf("data %q, want %q", got, want)
	}
	if got, want := frameStreams(frames), []string{"prices/b", "prices/a"}; !slices.Equal(got, want) {
		t.Fatalf("stream fields %q, want %q", got, want)
	}
	// The ids merge every matched stream's position, not the others'.
	ids := frameIDs(frames)
	if got := ids[len(ids)-1]; got != "x.2-y.1" {
		t.Fatalf("last id %q, want x.2-y.1 (x's entry as of its last event on a matched stream)", got)
	}
}

// A new stream finds its pattern sets through their literal prefixes,
// also when several sets share one, and a set that leaves is no longer
// found.
func TestPatternIndexFindsAndForgetsSets(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	a := subscribeSet(t, h, "", formatPlain, nil, "t/*/x")
	b := subscribeSet(t, h, "", formatPlain, nil, "t/?/x", "q")
	c := subscribeSet(t, h, "", formatPlain, nil, "*/1Min/OHLCV")
	applyOne(h, "t/1/x", "o", 1)
	applyOne(h, "t/22/x", "o", 2)
	applyOne(h, "BTC/1Min/OHLCV", "o", 3)
	applyOne(h, "q", "o", 4)
	if got := frameDatas(a.take()); !slices.Equal(got, []string{"t/1/x/o.1", "t/22/x/o.2"}) {
		t.Errorf("t/*/x got %q", got)
	}
	if got := frameDatas(b.take()); !slices.Equal(got, []string{"t/1/x/o.1", "q/o.4"}) {
		t.Errorf("t/?/x + q got %q", got)
	}
	if got := frameDatas(c.take()); !slices.Equal(got, []string{"BTC/1Min/OHLCV/o.3"}) {
		t.Errorf("*/1Min/OHLCV got %q", got)
	}
	h.unsubscribe(a)
	h.unsubscribe(b)
	h.unsubscribe(c)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.patterns) != 0 || len(h.sets) != 0 {
		t.Fatalf("after every subscriber left: %d pattern prefixes, %d sets; want none", len(h.patterns), len(h.sets))
	}
	for _, ss := range h.streams {
		if len(ss.sets) != 0 {
			t.Fatalf("stream %s still lists %d sets", ss.name, len(ss.sets))
		}
	}
}

// A pattern subscriber resumes exactly from any id it was given, on a
// replica that applied the same events in another order, including
// streams that appeared while it was away.
func TestPatternResumeIsExactOnAnotherReplica(t *testing.T) {
	one, _ := testHub(100, time.Minute)
	two, _ := testHub(100, time.Minute)
	both := func(stream, origin string, seq uint64) {
		applyOne(one, stream, origin, seq)
		applyOne(two, stream, origin, seq)
	}
	both("p/a", "x", 1)
	both("p/b", "y", 1)
	sub := subscribeSet(t, one, "", formatPlain, nil, "p/*")
	both("p/a", "x", 2)
	both("z", "y", 2)
	frames := sub.take()
	ids := frameIDs(frames)
	one.unsubscribe(sub)
	// Missed while away: replica two gets x and y interleaved differently,
	// on a stream that is new.
	applyOne(one, "p/c", "y", 3)
	applyOne(one, "p/c", "x", 3)
	applyOne(two, "p/c", "x", 3)
	applyOne(two, "p/c", "y", 3)
	both("p/a", "x", 4)
	want := []string{"p/c/x.3", "p/c/y.3", "p/a/x.4"}
	id := ids[len(ids)-1]
	for i := range want {
		again := subscribeSet(t, two, id, formatPlain, nil, "p/*")
		got := again.take()
		datas := frameDatas(got)
		slices.Sort(datas)
		rest := slices.Clone(want[i:])
		slices.Sort(rest)
		if !slices.Equal(datas, rest) {
			t.Fatalf("resume from %q replayed %q, want %q", id, datas, rest)
		}
		if i == 0 {
			if tags := frameStreams(got); !slices.Equal(tags, []string{"p/c", "p/c", "p/a"}) {
				t.Fatalf("replayed stream fields %q", tags)
			}
		}
		id = frameIDs(got)[0]
		two.unsubscribe(again)
	}
}

// A pattern set filtered by a credential never receives a matching stream
// the credential does not grant, even one created later.
func TestPatternReceivesOnlyGrantedStreams(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	applyOne(h, "users/bob/inbox", "o", 1)
	allow := func(s string) bool { return strings.HasPrefix(s, "users/alice/") }
	sub := subscribeSet(t, h, "", formatPlain, allow, "users/*/inbox")
	applyOne(h, "users/alice/inbox", "o", 2)
	applyOne(h, "users/carol/inbox", "o", 3)
	applyOne(h, "users/bob/inbox", "o", 4)
	if got := frameDatas(sub.take()); !slices.Equal(got, []string{"users/alice/inbox/o.2"}) {
		t.Fatalf("got %q, want only alice's stream", got)
	}
	// An unfiltered subscriber of the same pattern is a different set.
	open := subscribeSet(t, h, "", formatPlain, nil, "users/*/inbox")
	applyOne(h, "users/bob/inbox", "o", 5)
	if got := frameDatas(open.take()); !slices.Equal(got, []string{"users/bob/inbox/o.5"}) {
		t.Fatalf("unfiltered got %q", got)
	}
	if got := frameDatas(sub.take()); len(got) != 0 {
		t.Fatalf("filtered subscriber got %q", got)
	}
}

// Envelope frames carry the stream and the message as one JSON object on
// one data line, multi-line messages included.
func TestEnvelopeFrames(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	sub := subscribeSet(t, h, "", formatEnvelope, nil, "a")
	h.apply([]Event{{Stream: "a", Msg: "line one\nline \"two\"", Event: "note", Origin: "o", Seq: 1}}, "peer")
	frames := sub.take()
	last := string(frames[len(frames)-1])
	if !strings.HasPrefix(last, "id: o.1\nevent: note\ndata: {") {
		t.Fatalf("frame %q", last)
	}
	datas := frameDatas(frames)
	if len(datas) != 1 {
		t.Fatalf("data lines %q, want one", datas)
	}
	var env struct{ Stream, Data string }
	if err := json.Unmarshal([]byte(datas[0]), &env); err != nil {
		t.Fatal(err)
	}
	if env.Stream != "a" || env.Data != "line one\nline \"two\"" {
		t.Fatalf("envelope %+v", env)
	}
}

// A stream with no history and no subscriber of its own is created for a
// pattern subscriber, and forgotten once that subscriber leaves.
func TestPatternWithoutHistory(t *testing.T) {
	h, _ := testHub(0, time.Minute)
	sub := subscribeSet(t, h, "", formatPlain, nil, "n/*")
	applyOne(h, "n/1", "o", 1)
	applyOne(h, "m/1", "o", 2)
	if got := frameDatas(sub.take()); !slices.Equal(got, []string{"n/1/o.1"}) {
		t.Fatalf("got %q", got)
	}
	h.unsubscribe(sub)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.streams) != 0 {
		t.Fatalf("%d streams kept after the pattern subscriber left", len(h.streams))
	}
}

func TestSplitPatterns(t *testing.T) {
	names, patterns, err := splitPatterns([]string{"b", "a/*", "a", "b", "a/*", "[ab]/x"})
	if err != nil || !slices.Equal(names, []string{"a", "b"}) || !slices.Equal(patterns, []string{"[ab]/x", "a/*"}) {
		t.Fatalf("names %q patterns %q err %v", names, patterns, err)
	}
	for _, bad := range []string{"a/[", "a/*\n", "a b*", strings.Repeat("x", MaxStreamNameLength) + "*", "*" + string(rune(0xe9))} {
		if _, _, err := splitPatterns([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Matching a new stream costs lookups per prefix of its name, not a look
// at every pattern: the cost per event on a new stream and on an existing
// one, among 10,000 streams, with no pattern set and with 1,000.
func BenchmarkPatternMatch(b *testing.B) {
	for _, sets := range []int{0, 1000} {
		h, _ := testHub(10000, time.Hour)
		for i := range 10000 {
			applyOne(h, fmt.Sprintf("s%d/x", i), "o", uint64(i+1))
		}
		for i := range sets {
			sub := newSubscriber(nil, 1<<20)
			sub.selectSet([]string{fmt.Sprintf("p%d/*", i)}, formatPlain, nil, "")
			if _, ok := h.subscribe(sub, nil, false, 1000); !ok {
				b.Fatal("subscribe refused")
			}
		}
		seq := uint64(20000)
		b.Run(fmt.Sprintf("sets=%d/new-stream", sets), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				seq++
				applyOne(h, fmt.Sprintf("new%d/x", i), "o", seq)
			}
		})
		b.Run(fmt.Sprintf("sets=%d/existing-stream", sets), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				seq++
				applyOne(h, fmt.Sprintf("s%d/x", i%10000), "o", seq)
			}
		})
	}
}

// Over HTTP: a pattern subscription gets streams created after it, each
// event naming its stream; envelope=json puts the stream in the data.
func TestPatternSubscriptionOverHTTP(t *testing.T) {
	ts := startServer(t, Options{})
	sub := ssetest.Dial(t, ts.url("stream=rooms/*&stream=lobby"), "")
	env := ssetest.Dial(t, ts.url("stream=rooms/*&envelope=json"), "")
	for _, ev := range []Event{{Stream: "rooms/1", Msg: "one"}, {Stream: "hall", Msg: "no"}, {Stream: "lobby", Msg: "two", Event: "t"}, {Stream: "rooms/2", Msg: "three\nlines"}} {
		if err := ts.Publish(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	got := sub.Collect(3, 10*time.Second)
	want := []ssetest.Event{{Event: "message", Data: "one", Stream: "rooms/1"}, {Event: "t", Data: "two", Stream: "lobby"}, {Event: "message", Data: "three\nlines", Stream: "rooms/2"}}
	for i := range want {
		if i >= len(got) || got[i].Event != want[i].Event || got[i].Data != want[i].Data || got[i].Stream != want[i].Stream || got[i].ID == "" {
			t.Fatalf("got %+v, want %+v (with ids)", got, want)
		}
	}
	envs := env.Collect(2, 10*time.Second)
	if len(envs) != 2 || envs[0].Data != `{"stream":"rooms/1","data":"one"}` || envs[1].Data != `{"stream":"rooms/2","data":"three\nlines"}` || envs[0].Stream != "" {
		t.Fatalf("envelopes %+v", envs)
	}
	// Single-stream subscribers' frames are unchanged: no stream field.
	one := ssetest.Dial(t, ts.url("stream=rooms/1"), "")
	if err := ts.Publish(t.Context(), Event{Stream: "rooms/1", Msg: "four"}); err != nil {
		t.Fatal(err)
	}
	if ev := one.Next(t, 10*time.Second); ev.Data != "four" || ev.Stream != "" {
		t.Fatalf("single-stream event %+v", ev)
	}
}

func TestPatternSubscriptionBadInput(t *testing.T) {
	ts := startServer(t, Options{MaxStreamsPerConnection: 3})
	for _, tc := range []struct{ query, msg string }{
		{"stream=a/%5B", "invalid stream pattern"},
		{"stream=a/*%20b", "invalid stream pattern"},
		{"stream=a&envelope=xml", "envelope"},
		{"stream=a/*&stream=b/*&stream=c&stream=d", "at most 3 streams"},
	} {
		resp, body := ts.get(t, "/?"+tc.query)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.msg) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %s, want 400 JSON naming %q", tc.query, resp.StatusCode, body, tc.msg)
		}
	}
}

// A credential's grants filter what a pattern matches: a pattern wider
// than the grants never reaches another user's streams.
func TestPatternSubscriptionHonoursGrants(t *testing.T) {
	ts, _, _ := startAuthServer(t, Options{})
	alice := mintJWT(t, auth.DevClaims("alice", []string{"news/*"}, nil, time.Minute, time.Now()))
	hdr := map[string]string{"Authorization": "Bearer " + alice}
	wide := ts.dial(t, "stream=*/*", "", hdr)
	users := ts.dial(t, "stream=users/*/inbox&stream=news/*", "", hdr)
	for _, ev := range []Event{{Stream: "users/bob/inbox", Msg: "bob's"}, {Stream: "secret/x", Msg: "secret"}, {Stream: "news/1", Msg: "news"}, {Stream: "users/alice/inbox", Msg: "alice's"}, {Stream: "news/2", Msg: "end"}} {
		if err := ts.Publish(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	// */* matches two-segment names: news/1 and news/2 but not secret/x.
	for name, tc := range map[string]struct {
		sub  *ssetest.Sub
		want []string
	}{"*/*": {wide, []string{"news", "end"}}, "users/*/inbox + news/*": {users, []string{"news", "alice's", "end"}}} {
		var datas []string
		for _, ev := range tc.sub.Collect(len(tc.want), 10*time.Second) {
			datas = append(datas, ev.Data)
		}
		if !slices.Equal(datas, tc.want) {
			t.Errorf("%s: got %q, want %q: only granted streams (news/*, alice's own through the template)", name, datas, tc.want)
		}
	}
	// Nothing else arrives after: a last event on a granted stream comes
	// next, with nothing of bob's or secret/x before it.
	if err := ts.Publish(t.Context(), Event{Stream: "news/3", Msg: "last"}); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []*ssetest.Sub{wide, users} {
		if ev := sub.Next(t, 10*time.Second); ev.Data != "last" {
			t.Errorf("after the granted events: %+v, want the last news event", ev)
		}
	}
}

func (ts *testServer) get(t *testing.T, pathAndQuery string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.front.URL+pathAndQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}
