package lossless

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/sser-dev/sser/pkg/sser"
)

// publishToken is the publish credential of the playground's cluster.
const publishToken = "playground-token"

// publishEvent publishes one event on replica i's internal API and returns
// the origin and seq it was given.
func publishEvent(t *testing.T, c *cluster, i int, ev sser.Event) (string, uint64) {
	t.Helper()
	body, _ := json.Marshal(ev)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, c.internalURL(i)+sser.PublishURLPath, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+publishToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	var p sser.Published
	if resp.StatusCode != http.StatusOK || json.Unmarshal(answer, &p) != nil || p.Accepted != 1 {
		t.Fatalf("publish on replica %d: %s %s", i, resp.Status, answer)
	}
	return p.Origin, p.First
}

// shownEvent is an event as the playground shows it.
type shownEvent struct {
	Kind, Type, ID, Source, Stream string
	Lines                          []string
}

func shownEvents(t *testing.T, tab context.Context) []shownEvent {
	t.Helper()
	var evs []shownEvent
	domJSON(t, tab, `[...document.querySelectorAll('#log .ev[data-kind="event"], #log .ev[data-kind="notice"]')].map((e) => ({
		Kind: e.dataset.kind, Type: e.dataset.type, ID: e.dataset.id, Source: e.dataset.source, Stream: e.dataset.stream,
		Lines: [...e.querySelectorAll('.data .line')].map((l) => l.textContent)}))`, &evs)
	return evs
}

// The demo page shows every event of two streams whatever its type, with
// its stream, id, lines and the replica that published it, and sser-lost
// notices; its publish form publishes through the frontend with the
// publish token.
func TestBrowserPlayground(t *testing.T) {
	skipShort(t)
	tab := browserTab(t)
	// fake speaks as a third replica whose origin's events go missing.
	fake := subnet + "95"
	c := newCluster(t, 2, "--demo-page=true", "--publish-token="+publishToken, peersWith(2, fake))
	c.startAll()

	browse(t, tab, "open the playground", chromedp.Navigate(c.frontendURL(0)+"/?stream=pg,pg2"))
	var state string
	waitFor(t, deadline, "the playground to subscribe", func() bool {
		state = browse(t, tab, "read the state", chromedp.Evaluate[string](`document.getElementById('state').className + ' ' + document.getElementById('state').textContent`))
		return strings.HasPrefix(state, "ok connected to pg, pg2")
	}, func() string { return "state: " + state })

	type published struct {
		origin string
		seq    uint64
		want   shownEvent
	}
	// check waits for the page to show want events, then checks each
	// against what was published: the id must claim the event.
	check := func(want []published) []shownEvent {
		var evs []shownEvent
		waitFor(t, deadline, fmt.Sprintf("the playground to show %d events", len(want)), func() bool {
			evs = shownEvents(t, tab)
			return len(evs) >= len(want)
		}, func() string { return fmt.Sprintf("shown %+v", evs) })
		if len(evs) != len(want) {
			t.Fatalf("shown %d events, want %d: %+v", len(evs), len(want), evs)
		}
		for i, w := range want {
			got := evs[i]
			if got.Kind != w.want.Kind || got.Type != w.want.Type || got.Source != w.want.Source || got.Stream != w.want.Stream ||
				!slices.Equal(got.Lines, w.want.Lines) {
				t.Errorf("event %d shown as %+v, want %+v", i, got, w.want)
			}
			if w.origin == "" {
				continue // a notice: it has no id
			}
			if ok, err := sser.IDCovers(got.ID, w.origin, w.seq); !ok || err != nil {
				t.Errorf("event %d: id %q does not claim %s.%d (%v)", i, got.ID, w.origin, w.seq, err)
			}
		}
		return evs
	}
	var pubs []published
	for _, p := range []struct {
		on int
		ev sser.Event
		sh shownEvent
	}{
		{1, sser.Event{Stream: "pg", Msg: "untyped"}, shownEvent{Type: "message", Stream: "pg", Lines: []string{"untyped"}}},
		{0, sser.Event{Stream: "pg2", Event: "price", Msg: `{"sym":"ACME","px":12.5}`}, shownEvent{Type: "price", Stream: "pg2", Lines: []string{`{"sym":"ACME","px":12.5}`}}},
		{1, sser.Event{Stream: "pg", Msg: "line one\n\n  line three"}, shownEvent{Type: "message", Stream: "pg", Lines: []string{"line one", "", "  line three"}}},
	} {
		origin, seq := publishEvent(t, c, p.on, p.ev)
		p.sh.Kind, p.sh.Source = "event", origin
		pubs = append(pubs, published{origin, seq, p.sh})
		// Events of different replicas have no order between them: each
		// is seen before the next is published.
		check(pubs)
	}
	if pubs[0].origin == pubs[1].origin {
		t.Fatalf("both replicas publish as %s", pubs[0].origin)
	}

	// The form: without the token, and with a wrong one, refused and
	// nothing published; with it, published by replica 0.
	form := func(token string) string {
		js := fmt.Sprintf(`(() => {
			document.getElementById('pubresult').dataset.status = '';
			document.getElementById('pubstream').value = 'pg';
			document.getElementById('pubtype').value = 'from-form';
			document.getElementById('pubmsg').value = 'typed\nin the form';
			document.getElementById('pubtoken').value = %q;
			document.querySelector('#pubform button').click();
			return true;
		})()`, token)
		browse(t, tab, "submit the publish form", chromedp.Evaluate[bool](js))
		var result string
		waitFor(t, deadline, "the publish form's answer", func() bool {
			result = browse(t, tab, "read the answer", chromedp.Evaluate[string](`(document.getElementById('pubresult').dataset.status || '') + ' ' + document.getElementById('pubresult').textContent`))
			return !strings.HasPrefix(result, " ")
		})
		return result
	}
	for token, want := range map[string]string{"": "401 ", "wrong": "403 "} {
		if got := form(token); !strings.HasPrefix(got, want) {
			t.Errorf("publish form with token %q: %q, want %q", token, got, want)
		}
	}
	got := form(publishToken)
	if !strings.HasPrefix(got, "200 published: seq ") {
		t.Fatalf("publish form with the token: %q", got)
	}
	var seq uint64
	if _, err := fmt.Sscanf(got, "200 published: seq %d of", &seq); err != nil {
		t.Fatalf("publish form answer %q: %v", got, err)
	}
	pubs = append(pubs, published{pubs[1].origin, seq, shownEvent{Kind: "event", Type: "from-form", Source: pubs[1].origin, Stream: "pg", Lines: []string{"typed", "in the form"}}})
	check(pubs)

	// Events of a third origin from a peer, with a gap nobody can fill:
	// the page shows the first, the sser-lost notice, and the one after
	// the gap, still named by its origin (its id now carries the hole).
	ev := func(seq int) map[string]any {
		return map[string]any{"stream": "pg", "msg": fmt.Sprintf("fake %d", seq), "origin": "zfake", "seq": seq}
	}
	sendRaw(t, c, 0, fake, ev(1))
	sendRaw(t, c, 0, fake, ev(4))
	pubs = append(pubs,
		published{"zfake", 1, shownEvent{Kind: "event", Type: "message", Source: "zfake", Stream: "pg", Lines: []string{"fake 1"}}},
		published{"", 0, shownEvent{Kind: "notice", Type: sser.LostEventType, Lines: []string{`{"reason":"gap","origin":"zfake","after":1,"upTo":3}`}}},
		published{"zfake", 4, shownEvent{Kind: "event", Type: "message", Source: "zfake", Stream: "pg", Lines: []string{"fake 4"}}})
	check(pubs)
	screenshot(t, tab, "events")
}

// The playground's own text/event-stream parser and its reading of ids,
// run in the browser on input a server may send but sser's does not: CR
// and CRLF line ends split across reads, comments, retry, a field with no
// colon, an id with NUL, and ids with holes, dropped origins and numbers
// past 2^53.
func TestBrowserPlaygroundParser(t *testing.T) {
	skipShort(t)
	tab := browserTab(t)
	c := newCluster(t, 1, "--demo-page=true")
	c.startAll()
	browse(t, tab, "open the playground", chromedp.Navigate(c.frontendURL(0)+"/"))

	type parsed struct {
		Type, Data, ID, Source, Stream string
		HasID                          bool
	}
	var got struct {
		Events []parsed
		Retry  int
		LastID string
	}
	domJSON(t, tab, `(() => {
		const out = [], conn = {lastId: '', known: false, retry: 3000};
		const push = sseParser(conn, (e) => out.push({Type: e.type, Data: e.data, ID: e.id, HasID: e.hasId, Source: e.source, Stream: e.stream || ''}));
		for (const chunk of ['retry: 1500\r\n', ': comment\r\n\r', '\nid: o1.1\n\n',
			'event: price\rdata:no space\r', '\ndata: second\r\n', '\r\n',
			'data\n\n',
			'id: bad\0id\ndata: x\n\n',
			'data: y\nid: o1.2-o2.1\n\n',
			'data: z\nstream: s/1\nid: o1.3-o2.1\n\n',
			'id: o1.3\ndata: q\n\n',
			'id: o1.3.0.3-o3.5\ndata: w\n\nretry: x\n']) push(chunk);
		return {Events: out, Retry: conn.retry, LastID: conn.lastId};
	})()`, &got)
	want := []parsed{
		{Type: "price", Data: "no space\nsecond", ID: "o1.1"},
		{Type: "message", Data: "", ID: "o1.1"},
		{Type: "message", Data: "x", ID: "o1.1"},
		{Type: "message", Data: "y", ID: "o1.2-o2.1", HasID: true},                              // two entries moved: no guess
		{Type: "message", Data: "z", ID: "o1.3-o2.1", HasID: true, Source: "o1", Stream: "s/1"}, // one advanced
		{Type: "message", Data: "q", ID: "o1.3", HasID: true},                                   // one dropped, none advanced
		{Type: "message", Data: "w", ID: "o1.3.0.3-o3.5", HasID: true, Source: "o3"},            // o1 now claims nothing
	}
	if !slices.Equal(got.Events, want) || got.Retry != 1500 || got.LastID != "o1.3.0.3-o3.5" {
		t.Errorf("parsed %+v, retry %d, last id %q\nwant %+v, retry 1500", got.Events, got.Retry, got.LastID, want)
	}

	for _, tt := range []struct{ prev, id, want string }{
		{"", "a.1", "a"},                            // no id before: the only origin
		{"", "a.1-b.2", ""},                         // no id before, two origins
		{"a.1", "a.2", "a"},                         //
		{"a.2-b.1", "a.1-b.2", ""},                  // a went back
		{"a.2", "a.2.0.1", ""},                      // only a hole changed
		{"x.1.0.1", "x.1", "x"},                     // an id that claimed nothing
		{"a.1", "not an id!", ""},                   //
		{"a.zz", "a.100", "a"},                      // base 36: zz < 100
		{"a.3w5e11264sgsf", "a.3w5e11264sgsg", "a"}, // past 2^53
		{"a.1", "a.1", ""},                          // nothing moved
	} {
		prev := "null"
		if tt.prev != "" {
			prev = fmt.Sprintf("%q", tt.prev)
		}
		var src string
		domJSON(t, tab, fmt.Sprintf("sourceOf(%s, %q)", prev, tt.id), &src)
		if src != tt.want {
			t.Errorf("sourceOf(%s, %q) = %q, want %q", prev, tt.id, src, tt.want)
		}
	}
}
