package lossless

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sser-dev/sser/pkg/wsclient"
)

// stream2 is the second stream of the WebSocket tests.
const stream2 = "lossless2"

// wsRecorder is a subscriber on the project's WebSocket client: it
// records every event by stream, and every connection.
type wsRecorder struct {
	c *wsclient.Client

	mu       sync.Mutex
	byStream map[string][]string
	lost     []string
	resumes  []string // each connection's resume result
}

func wsSubscribe(t *testing.T, u string, streams ...string) *wsRecorder {
	t.Helper()
	r := &wsRecorder{byStream: make(map[string][]string)}
	c, err := wsclient.Dial(t.Context(), u, streams, wsclient.Options{
		InitialDelay: 100 * time.Millisecond,
		MaxDelay:     time.Second,
		ReadTimeout:  5 * time.Second, // five pings (--heartbeat=1s)
		OnConnect: func(resume string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.resumes = append(r.resumes, resume)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		for ev := range c.Events() {
			r.mu.Lock()
			if ev.Type == wsclient.LostType {
				r.lost = append(r.lost, ev.Data)
			} else {
				r.byStream[ev.Stream] = append(r.byStream[ev.Stream], ev.Data)
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *wsRecorder) msgs(stream string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byStream[stream])
}

func (r *wsRecorder) connections() ([]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.resumes), slices.Clone(r.lost)
}

// The Go WebSocket client subscribes through a balancer in front of three
// replicas, adds a stream while connected, has its replica drained under
// it while three publishers on three replicas go on, resumes on another
// replica by itself, and then drops a stream: every event of its streams
// arrives exactly once, in per-origin order, and none of a stream after it
// was dropped.
func TestWebSocketClientChangesStreamsAndResumesAcrossDrain(t *testing.T) {
	skipShort(t)
	c := newCluster(t, 3)
	c.startAll()
	b := newBalancer(t, c)
	b.waitReady(t, 0, 1, 2)
	rec := wsSubscribe(t, b.URL+"/events", stream)
	waitFor(t, deadline, "the WebSocket to subscribe", func() bool {
		res, _ := rec.connections()
		return len(res) == 1 && b.activeOn(0)+b.activeOn(1)+b.activeOn(2) == 1
	})
	onReplica := -1
	for i := range 3 {
		if b.activeOn(i) == 1 {
			onReplica = i
		}
	}
	if onReplica < 0 {
		t.Fatal("the WebSocket is on no replica")
	}

	// p and q publish to the first stream, on two replicas, the drained
	// one among them; r to the second stream, added while connected.
	p, q := newPublisher(c, b, "p", (onReplica+1)%3), newPublisher(c, b, "q", onReplica)
	r := newPublisher(c, b, "r", (onReplica+2)%3)
	r.stream = stream2
	publishRounds(t, 10, p, q)
	waitFor(t, deadline, "20 events", func() bool { return len(rec.msgs(stream)) >= 20 })
	if err := rec.c.Subscribe(t.Context(), stream2); err != nil {
		t.Fatal(err)
	}
	publishRounds(t, 10, p, q, r)
	waitFor(t, deadline, "the second stream's events", func() bool { return len(rec.msgs(stream2)) >= 10 })

	// Drain the replica under the WebSocket while all three publish.
	rep := c.rep(onReplica)
	if err := rep.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	runAll(t, 20, 80, p, q, r)
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	if err := rep.Wait(ctx); err != nil {
		t.Fatalf("drained replica: %v, want exit 0", err)
	}
	status := func() string {
		res, lost := rec.connections()
		return fmt.Sprintf("%d and %d events; connections resumed %q; lost %q; %q; %q", len(rec.msgs(stream)), len(rec.msgs(stream2)),
			res, lost, check(rec.msgs(stream), p, q).problems, check(rec.msgs(stream2), r).problems)
	}
	waitFor(t, deadline, "every event of both streams", func() bool {
		return len(rec.msgs(stream)) >= p.sent()+q.sent() && len(rec.msgs(stream2)) >= r.sent()
	}, status)
	if tl := check(rec.msgs(stream), p, q); !tl.ok() {
		t.Errorf("first stream: %d received, %d duplicates, %d missing, %d out of order: %q", tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
	}
	// r began after the second stream was subscribed: all of it is wanted.
	if tl := check(rec.msgs(stream2), r); !tl.ok() {
		t.Errorf("second stream: %d received, %d duplicates, %d missing, %d out of order: %q", tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
	}
	resumes, lost := rec.connections()
	if len(resumes) < 2 || resumes[len(resumes)-1] != "exact" || len(lost) > 0 {
		t.Errorf("connections resumed %q, lost %q: want a reconnection that resumed exactly", resumes, lost)
	}
	if n := c.metric((onReplica+1)%3, "sser_resumes_total", `result="exact"`) + c.metric((onReplica+2)%3, "sser_resumes_total", `result="exact"`); n < 1 {
		t.Errorf("sser_resumes_total{result=exact} = %v on the other replicas", n)
	}

	// Drop the first stream: what p and q publish after that never comes.
	if err := rec.c.Unsubscribe(t.Context(), stream); err != nil {
		t.Fatal(err)
	}
	had := len(rec.msgs(stream))
	pFrom, qFrom := p.sent(), q.sent()
	publishRounds(t, 10, p, q, r)
	waitFor(t, deadline, "the second stream's last events", func() bool { return len(rec.msgs(stream2)) >= r.sent() }, status)
	// Everything of the second stream, and (once r's last event is in)
	// nothing of the first published after the change.
	for _, m := range rec.msgs(stream)[had:] {
		name, n, _ := strings.Cut(m, "-")
		k, _ := strconv.Atoi(n)
		if (name == "p" && k >= pFrom) || (name == "q" && k >= qFrom) {
			t.Errorf("got %s of the dropped stream, published after it was dropped", m)
		}
	}
	if tl := check(rec.msgs(stream2), r); !tl.ok() {
		t.Errorf("second stream at the end: %d received, %d duplicates, %d missing: %q", tl.received, tl.dups, tl.missing, tl.problems)
	}
	if n := c.metric((onReplica+1)%3, "sser_websocket_connections") + c.metric((onReplica+2)%3, "sser_websocket_connections"); n != 1 {
		t.Errorf("sser_websocket_connections = %v on the other replicas, want 1", n)
	}
	t.Logf("WebSocket: %d + %d events once each across %d connections", len(rec.msgs(stream)), len(rec.msgs(stream2)), len(resumes))
}

// wsPage subscribes with a browser's WebSocket and reports what it sees to
// /report. After 10 events of the first stream it subscribes to the
// second, after 10 of the second it drops the first; when the server
// closes the connection so that it comes back (a drain), it reconnects
// with its streams and the last id it got, as an application would.
const wsPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>sser WebSocket</title></head><body>
<pre id="log"></pre>
<script>
let k = 0;
function report(kind, data, id, extra) {
  const body = JSON.stringify({k: k++, kind: kind, data: data, id: id, extra: extra});
  fetch('/report', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: body});
}
let streams = ['` + stream + `'], lastId = '', n1 = 0, n2 = 0, step = 0;
function connect() {
  let q = streams.map((s) => 'stream=' + encodeURIComponent(s)).join('&');
  if (lastId) q += '&lastEventID=' + encodeURIComponent(lastId);
  const ws = new WebSocket('ws://' + location.host + '/events?' + q);
  ws.onopen = () => report('open', '', '', '');
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.id) lastId = m.id;
    if (m.type === 'event') {
      document.getElementById('log').textContent += m.stream + ' ' + m.data + '\n';
      report('message', m.data, m.id, m.stream);
      if (m.stream === '` + stream + `' && ++n1 === 10 && step === 0) {
        step = 1;
        ws.send(JSON.stringify({type: 'subscribe', streams: ['` + stream2 + `']}));
      }
      if (m.stream === '` + stream2 + `' && ++n2 === 10 && step === 1) {
        step = 2;
        ws.send(JSON.stringify({type: 'unsubscribe', streams: ['` + stream + `']}));
      }
    } else if (m.type === 'subscribed') {
      streams = m.streams;
      report('subscribed', m.streams.join(','), m.id, m.resume || '');
    } else {
      report(m.type, e.data, '', '');
    }
  };
  ws.onclose = (e) => {
    report('close', String(e.code), '', e.reason);
    if ([1001, 1006, 4206, 4408, 4429].includes(e.code)) setTimeout(connect, 200);
  };
}
connect();
</script></body></html>
`

// A browser's WebSocket subscribes through the balancer, receives, adds a
// stream and drops one on the open connection; its replica is drained and
// the page reconnects with its last id to the other replica: every event
// of its streams once, in order, and none of the dropped stream after it
// was dropped.
func TestBrowserWebSocket(t *testing.T) {
	skipShort(t)
	bin := findChromium(t)
	c := newCluster(t, 2, "--retry=300ms")
	c.startAll()
	b, blog := browserRun(t, bin, c, wsPage)
	reports := func(kind string) []browserReport {
		var out []browserReport
		for _, r := range blog.ordered() {
			if r.Kind == kind {
				out = append(out, r)
			}
		}
		return out
	}
	events := func(s string) []string {
		var out []string
		for _, r := range reports("message") {
			if r.Extra == s {
				out = append(out, r.Data)
			}
		}
		return out
	}
	subscribedTo := func(set string) func() bool {
		return func() bool {
			for _, r := range reports("subscribed") {
				if r.Data == set {
					return true
				}
			}
			return false
		}
	}
	status := func() string { return fmt.Sprintf("reports %+v", blog.ordered()) }
	// Only the WebSocket open on the balancer (a page's other requests, a
	// favicon, come and go).
	waitFor(t, deadline, "the page's WebSocket to subscribe", func() bool {
		return subscribedTo(stream)() && b.activeOn(0)+b.activeOn(1) == 1
	}, status)
	onReplica := 0
	if b.activeOn(1) == 1 {
		onReplica = 1
	}
	other := 1 - onReplica

	p := newPublisher(c, b, "p", other)
	publishRounds(t, 10, p)
	waitFor(t, deadline, "the page to add the second stream", subscribedTo(stream+","+stream2), status)
	r := newPublisher(c, b, "r", onReplica)
	r.stream = stream2
	publishRounds(t, 10, r)
	waitFor(t, deadline, "the page to drop the first stream", subscribedTo(stream2), status)
	publishRounds(t, 10, p, r)

	// Drain the page's replica while r goes on.
	rep := c.rep(onReplica)
	if err := rep.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := r.run(t.Context(), 20, 80, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	if err := rep.Wait(ctx); err != nil {
		t.Fatalf("drained replica: %v, want exit 0", err)
	}
	waitFor(t, deadline, fmt.Sprintf("the page to show all %d events of the second stream", r.sent()), func() bool { return len(events(stream2)) >= r.sent() }, status)

	if got, want := events(stream), names("p", 0, 10); !slices.Equal(got, want) {
		t.Errorf("first stream: %q, want %q (and nothing after it was dropped)", got, want)
	}
	if tl := check(events(stream2), r); !tl.ok() {
		t.Errorf("second stream: %d received, %d duplicates, %d missing, %d out of order: %q", tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
	}
	subs := reports("subscribed")
	if last := subs[len(subs)-1]; len(reports("open")) != 2 || last.Data != stream2 || last.Extra != "exact" {
		t.Errorf("opens %d, last subscribed %+v: want a reconnection that resumed the second stream exactly", len(reports("open")), last)
	}
	if closes := reports("close"); len(closes) == 0 || closes[0].Data != "1001" {
		t.Errorf("closes %+v: want the drain's 1001 first", closes)
	}
	if n := c.metric(other, "sser_resumes_total", `result="exact"`); n < 1 {
		t.Errorf("sser_resumes_total{result=exact} = %v on the other replica", n)
	}
	t.Logf("browser WebSocket: %d + %d events once each, across %d connections", len(events(stream)), len(events(stream2)), len(reports("open")))
}
