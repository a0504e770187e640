package lossless

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// streamsPage subscribes to a pattern and a stream with envelope=json and
// reports the stream and data of each event, as a page would use them.
const streamsPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>sser streams</title></head><body>
<script>
let k = 0;
function report(kind, data, id) {
  fetch('/report', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({k: k++, kind: kind, data: data, id: id})});
}
const es = new EventSource('/events?stream=' + encodeURIComponent('p/*') + '&stream=other&envelope=json');
es.onopen = () => report('open', '', '');
es.onmessage = (e) => { const m = JSON.parse(e.data); report('message', m.stream + '|' + m.data, e.lastEventId); };
es.addEventListener('tick', (e) => { const m = JSON.parse(e.data); report('message', 'tick:' + m.stream + '|' + m.data, e.lastEventId); });
</script></body></html>
`

// A browser's EventSource subscribed to a pattern and a stream learns each
// event's stream from the envelope, including a stream created after it
// subscribed, typed events included, and gets nothing of other streams.
func TestBrowserNamesStreamsOfPatternSubscription(t *testing.T) {
	skipShort(t)
	bin := findChromium(t)
	c := newCluster(t, 2)
	c.startAll()
	_, blog := browserRun(t, bin, c, streamsPage)
	waitFor(t, deadline, "the page's EventSource to open", func() bool { _, opens, _, _ := blog.kinds(); return opens > 0 })
	for _, ev := range []struct {
		i                int
		stream, typ, msg string
	}{
		{0, "p/a", "", "one"}, {1, "q", "", "not mine"}, {1, "other", "", "two\nlines"}, {0, "p/new", "tick", "three"}, {1, "p/a/deep", "", "too deep"}, {0, "p/a", "", "four"},
		// Last on each replica: once both arrive, everything before them has.
		{0, "p/end", "", "r0"}, {1, "p/end", "", "r1"},
	} {
		body := fmt.Sprintf(`{"stream":%q,"msg":%q,"event":%q}`, ev.stream, ev.msg, ev.typ)
		if err := postJSON(t.Context(), http.DefaultClient, c.internalURL(ev.i)+"/api/json/v1/publish", body); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"p/a|one", "other|two\nlines", "tick:p/new|three", "p/a|four", "p/end|r0", "p/end|r1"}
	waitFor(t, deadline, "the page to report both replicas' last events", func() bool {
		msgs, _, _, _ := blog.kinds()
		return slices.Contains(msgs, "p/end|r0") && slices.Contains(msgs, "p/end|r1")
	})
	msgs, _, _, _ := blog.kinds()
	slices.Sort(msgs)
	slices.Sort(want)
	if !slices.Equal(msgs, want) {
		t.Fatalf("the page saw %q, want %q", msgs, want)
	}
}
