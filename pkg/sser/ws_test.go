package sser

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/auth"
)

// wsModes are the two ways a WebSocket's input is read: started by the
// close watcher (an idle connection holds no goroutine), or by a
// goroutine of its own (DisableHijack).
var wsModes = []struct {
	name string
	opts Options
}{
	{"polled", Options{}},
	{"goroutine", Options{DisableHijack: true}},
}

// A WebSocket subscribes on its URL, gets a subscribed message with its
// id, then the events of its streams with the stream each came from.
func TestWSSubscribeOnURL(t *testing.T) {
	for _, mode := range wsModes {
		t.Run(mode.name, func(t *testing.T) {
			ts := startServer(t, mode.opts)
			c := mustDialWS(t, ts.wsURL("stream=a&stream=b"), nil)
			sub := c.next(t, 5*time.Second)
			if sub.Type != "subscribed" || !slices.Equal(sub.Streams, []string{"a", "b"}) || sub.ID == "" || sub.Resume != "" {
				t.Fatalf("first message %+v, want subscribed to [a b] with an id", sub)
			}
			for i := 1; i <= 4; i++ {
				if err := ts.Publish(t.Context(), Event{Stream: string(rune('a' + i%2)), Msg: "m" + strconv.Itoa(i), Event: "tick"}); err != nil {
					t.Fatal(err)
				}
			}
			evs := c.events(t, 4, 5*time.Second)
			for i, m := range evs {
				if want := string(rune('a' + (i+1)%2)); m.Stream != want || m.Event != "tick" || m.ID == "" {
					t.Errorf("event %d: %+v, want stream %s, event tick, an id", i, m, want)
				}
			}
			if got := wsData(evs); got != "m1,m2,m3,m4" {
				t.Errorf("got %s", got)
			}
			if n := testutil.ToFloat64(ts.m.wsConnections); n != 1 {
				t.Errorf("sser_websocket_connections = %v, want 1", n)
			}
		})
	}
}

// A WebSocket and an SSE subscriber of the same streams get the same ids,
// live and when resuming from the same id.
func TestWSSameIDsAsSSE(t *testing.T) {
	ts := startServer(t, Options{})
	ctx := t.Context()
	sse := ts.dial(t, "stream=a&stream=b", "", nil)
	c := mustDialWS(t, ts.wsURL("stream=a&stream=b"), nil)
	first := c.nextOf(t, "subscribed", 5*time.Second)
	if first.ID != sse.LastID() {
		t.Errorf("first id %q, SSE's %q", first.ID, sse.LastID())
	}
	var ids []string
	for i := range 6 {
		if err := ts.Publish(ctx, Event{Stream: []string{"a", "b", "c"}[i%3], Msg: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range sse.Collect(4, 5*time.Second) {
		ids = append(ids, ev.ID)
	}
	var wsIDs []string
	for _, m := range c.events(t, 4, 5*time.Second) {
		wsIDs = append(wsIDs, m.ID)
	}
	if !slices.Equal(ids, wsIDs) {
		t.Fatalf("WebSocket ids %q, SSE ids %q", wsIDs, ids)
	}

	// Both resume from the second event's id and get the same replay.
	from := ids[1]
	sse2 := ts.dial(t, "stream=a&stream=b", from, nil)
	c2 := mustDialWS(t, ts.wsURL("stream=a&stream=b&lastEventID="+from), nil)
	var replay, wsReplay []string
	for _, ev := range sse2.Collect(2, 5*time.Second) {
		replay = append(replay, ev.ID+"="+ev.Data)
	}
	for _, m := range c2.events(t, 2, 5*time.Second) {
		wsReplay = append(wsReplay, m.ID+"="+m.Data)
	}
	if !slices.Equal(replay, wsReplay) {
		t.Fatalf("WebSocket replay %q, SSE replay %q", wsReplay, replay)
	}
	sub := c2.nextOf(t, "subscribed", 5*time.Second)
	if sub.Resume != "exact" || sub.ID != sse2.WaitID(t, 5*time.Second) {
		t.Errorf("after the replay %+v, want resume exact and SSE's id %q", sub, sse2.LastID())
	}
}

// The first message subscribes a connection that named no streams, and may
// resume; later messages add and remove streams.
func TestWSSubscribeByMessage(t *testing.T) {
	for _, mode := range wsModes {
		t.Run(mode.name, func(t *testing.T) {
			ts := startServer(t, mode.opts)
			ctx := t.Context()
			c := mustDialWS(t, ts.wsURL(""), nil)
			c.send(t, `{"type":"subscribe","streams":["a"]}`)
			if m := c.next(t, 5*time.Second); m.Type != "subscribed" || !slices.Equal(m.Streams, []string{"a"}) {
				t.Fatalf("got %+v, want subscribed to [a]", m)
			}
			for _, ev := range []Event{{Stream: "a", Msg: "a1"}, {Stream: "b", Msg: "b1"}} {
				if err := ts.Publish(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
			if got := c.events(t, 1, 5*time.Second); got[0].Data != "a1" {
				t.Fatalf("got %+v", got)
			}
			c.send(t, `{"type":"subscribe","streams":["b"]}`)
			if m := c.next(t, 5*time.Second); m.Type != "subscribed" || !slices.Equal(m.Streams, []string{"a", "b"}) {
				t.Fatalf("got %+v, want subscribed to [a b]", m)
			}
			if err := ts.Publish(ctx, Event{Stream: "b", Msg: "b2"}, Event{Stream: "a", Msg: "a2"}); err != nil {
				t.Fatal(err)
			}
			// b1 was before b was added: it starts live.
			if got := wsData(c.events(t, 2, 5*time.Second)); got != "b2,a2" {
				t.Fatalf("got %s, want b2,a2", got)
			}
			c.send(t, `{"type":"unsubscribe","streams":["a"]}`)
			if m := c.next(t, 5*time.Second); m.Type != "subscribed" || !slices.Equal(m.Streams, []string{"b"}) {
				t.Fatalf("got %+v, want subscribed to [b]", m)
			}
			if err := ts.Publish(ctx, Event{Stream: "a", Msg: "a3"}, Event{Stream: "b", Msg: "b3"}); err != nil {
				t.Fatal(err)
			}
			if got := c.events(t, 1, 5*time.Second); got[0].Data != "b3" {
				t.Fatalf("got %+v, want b3", got)
			}
			if n := testutil.ToFloat64(ts.m.wsMessages.WithLabelValues("subscribe")); n != 1 {
				t.Errorf("subscribe messages counted %v, want 1 (the first is the connection's own)", n)
			}
		})
	}
}

func wsHeader(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// A message the server cannot take ends the connection: an error message
// saying why, then a close with a code the client can act on. What was
// queued before it is still delivered, and nothing changed.
func TestWSRefusedMessages(t *testing.T) {
	old := wsCloseLinger
	wsCloseLinger = 50 * time.Millisecond
	t.Cleanup(func() { wsCloseLinger = old })
	ts, tk, _ := startAuthServer(t, Options{MaxStreamsPerConnection: 3,
		AllowStream: func(_ *http.Request, stream string) bool { return stream != "users/bob/closed" }})
	bob, _, err := tk.Mint("bob", []string{"users/bob/*"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ticket := "ticket=" + bob
	tests := []struct {
		name  string
		query string
		send  []string // text messages
		raw   []byte   // or one raw frame, unmasked by the client
		op    ws.OpCode
		code  ws.StatusCode
		msg   string
	}{
		{name: "bad JSON", query: ticket, send: []string{`{"type":"subscribe",`}, code: WSCloseBadMessage, msg: "JSON object"},
		{name: "not an object", query: ticket, send: []string{`["subscribe"]`}, code: WSCloseBadMessage, msg: "JSON object"},
		{name: "two objects", query: ticket, send: []string{`{"type":"subscribe","streams":["users/bob/a"]} {}`}, code: WSCloseBadMessage, msg: "one JSON object"},
		{name: "unknown type", query: ticket, send: []string{`{"type":"subscirbe","streams":["users/bob/a"]}`}, code: WSCloseBadMessage, msg: `unknown message type "subscirbe"`},
		{name: "no type", query: ticket, send: []string{`{"streams":["users/bob/a"]}`}, code: WSCloseBadMessage, msg: "no type"},
		{name: "unknown field", query: ticket, send: []string{`{"type":"subscribe","streams":["users/bob/a"],"from":"x"}`}, code: WSCloseBadMessage, msg: `unknown field "from"`},
		{name: "streams not a list", query: ticket, send: []string{`{"type":"subscribe","streams":"users/bob/a"}`}, code: WSCloseBadMessage, msg: `"streams" has the wrong type`},
		{name: "no streams", query: ticket, send: []string{`{"type":"subscribe","streams":[]}`}, code: WSCloseBadMessage, msg: "names no streams"},
		{name: "invalid stream", query: ticket, send: []string{`{"type":"subscribe","streams":["users/bob/a b"]}`}, code: WSCloseBadMessage, msg: "invalid stream name"},
		{name: "too many streams", query: ticket, send: []string{`{"type":"subscribe","streams":["users/bob/1","users/bob/2","users/bob/3","users/bob/4"]}`}, code: WSCloseBadMessage, msg: "at most 3 streams"},
		{name: "too many streams in all", query: "stream=users/bob/a&stream=users/bob/2&" + ticket, send: []string{`{"type":"subscribe","streams":["users/bob/3","users/bob/4"]}`}, code: WSCloseBadMessage, msg: "this would make 4"},
		{name: "bad lastEventId", query: ticket, send: []string{`{"type":"subscribe","streams":["users/bob/a"],"lastEventId":"not an id"}`}, code: WSCloseBadMessage, msg: "invalid lastEventId"},
		{name: "first message not a subscribe", query: ticket, send: []string{`{"type":"unsubscribe","streams":["users/bob/a"]}`}, code: WSCloseBadMessage, msg: "first message must be a subscribe"},
		{name: "lastEventId on a later subscribe", query: "stream=users/bob/a&" + ticket, send: []string{`{"type":"subscribe","streams":["users/bob/b"],"lastEventId":"k7f2q9xa0b1c.1"}`}, code: WSCloseBadMessage, msg: "first subscribe only"},
		{name: "stream not granted", query: ticket, send: []string{`{"type":"subscribe","streams":["users/alice/a"]}`}, code: WSCloseForbidden, msg: `does not grant stream "users/alice/a"`},
		{name: "stream not granted later", query: "stream=users/bob/a&" + ticket, send: []string{`{"type":"subscribe","streams":["users/alice/a"]}`}, code: WSCloseForbidden, msg: "does not grant"},
		{name: "stream not allowed", query: "stream=users/bob/a&" + ticket, send: []string{`{"type":"subscribe","streams":["users/bob/closed"]}`}, code: WSCloseForbidden, msg: `stream "users/bob/closed" is not allowed`},
		{name: "no credential", send: []string{`{"type":"subscribe","streams":["users/bob/a"]}`}, code: WSCloseUnauthorized, msg: "credentials required"},
		{name: "wrong token", send: []string{`{"type":"subscribe","streams":["users/bob/a"],"token":"t1.forged"}`}, code: WSCloseUnauthorized, msg: "credentials not accepted"},
		{name: "binary message", query: ticket, raw: []byte("{}"), op: ws.OpBinary, code: ws.StatusUnsupportedData, msg: "binary"},
		{name: "invalid UTF-8", query: "stream=users/bob/a&" + ticket, raw: []byte("{\"type\":\"\xff\"}"), op: ws.OpText, code: ws.StatusInvalidFramePayloadData, msg: "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustDialWS(t, ts.wsURL(tt.query), nil)
			subscribed := tt.query != ticket && tt.query != ""
			if subscribed {
				c.nextOf(t, "subscribed", 5*time.Second)
				// Queued before the bad message: delivered before the close.
				if err := ts.Send(t.Context(), "users/bob/a", "before"); err != nil {
					t.Fatal(err)
				}
				if got := c.events(t, 1, 5*time.Second); got[0].Data != "before" {
					t.Fatalf("got %+v", got)
				}
			}
			for _, m := range tt.send {
				c.send(t, m)
			}
			if tt.raw != nil {
				if err := c.write(tt.op, tt.raw); err != nil {
					t.Fatal(err)
				}
			}
			msgs, code, reason := c.waitClose(t, 5*time.Second)
			if code != tt.code {
				t.Fatalf("closed with %d %q, want %d (messages %+v)", code, reason, tt.code, msgs)
			}
			if !strings.Contains(reason, tt.msg) {
				t.Errorf("close reason %q does not say %q", reason, tt.msg)
			}
			if tt.code >= 4000 {
				if len(msgs) == 0 || msgs[len(msgs)-1].Type != "error" || int(tt.code) != msgs[len(msgs)-1].Code || !strings.Contains(msgs[len(msgs)-1].Message, tt.msg) {
					t.Errorf("messages %+v: want an error message %d saying %q last", msgs, tt.code, tt.msg)
				}
			}
			testproc.Eventually(t, 5*time.Second, "the connection to be let go", func() bool { return ts.hub.subscriberCount() == 0 && ts.slots() == 0 })
		})
	}
	if n := testutil.ToFloat64(ts.m.badRequests.WithLabelValues(wsEndpoint, "4400")); n < 10 {
		t.Errorf("sser_bad_requests_total{endpoint=websocket,code=4400} = %v", n)
	}
}

// A handshake the server refuses is answered with a JSON error and the
// status SSE would get, before any upgrade.
func TestWSRefusedHandshakes(t *testing.T) {
	ts, tk, _ := startAuthServer(t, Options{MaxStreamsPerConnection: 2, CORSOrigins: []string{"https://app.example"}})
	bob, _, err := tk.Mint("bob", []string{"users/bob/*"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		query  string
		hdr    http.Header
		status int
		msg    string
	}{
		{name: "invalid stream", query: "stream=a%20b&ticket=" + bob, status: 400, msg: "invalid stream name"},
		{name: "too many streams", query: "stream=users/bob/1&stream=users/bob/2&stream=users/bob/3&ticket=" + bob, status: 400, msg: "at most 2 streams"},
		{name: "no credential", query: "stream=users/bob/a", status: 401, msg: "credentials required"},
		{name: "wrong credential", query: "ticket=t1.forged", status: 401, msg: "credentials not accepted"},
		{name: "stream not granted", query: "stream=users/alice/a&ticket=" + bob, status: 403, msg: "does not grant"},
		{name: "bad id", query: "stream=users/bob/a&lastEventID=x&ticket=" + bob, status: 400, msg: "Last-Event-ID"},
		{name: "other origin", query: "stream=users/bob/a&ticket=" + bob, hdr: wsHeader("Origin", "https://evil.example"), status: 403, msg: "origin"},
		{name: "null origin", query: "stream=users/bob/a&ticket=" + bob, hdr: wsHeader("Origin", "null"), status: 403, msg: "origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dialWS(t.Context(), ts.wsURL(tt.query), tt.hdr)
			var ref *wsRefusal
			if !errors.As(err, &ref) {
				t.Fatalf("dial: %v, want a refusal", err)
			}
			var body struct{ Error string }
			if ref.status != tt.status || json.Unmarshal([]byte(ref.body), &body) != nil || !strings.Contains(body.Error, tt.msg) {
				t.Errorf("answered %d %s, want %d and a JSON error saying %q", ref.status, ref.body, tt.status, tt.msg)
			}
		})
	}
	// The listed origin and the server's own are allowed.
	for _, origin := range []string{"https://app.example", ts.front.URL} {
		c := mustDialWS(t, ts.wsURL("stream=users/bob/a&ticket="+bob), wsHeader("Origin", origin))
		c.nextOf(t, "subscribed", 5*time.Second)
	}
	if ts.slots() != 2 {
		t.Errorf("%d connection slots held, want the 2 connections'", ts.slots())
	}
}

// With "*" any origin may open a WebSocket, but without the visitor's
// cookies: a page elsewhere must not read a stream as the visitor.
func TestWSAnyOriginGetsNoCookies(t *testing.T) {
	ts, tk, _ := startAuthServer(t, Options{CORSOrigins: []string{"*"}})
	bob, _, err := tk.Mint("bob", []string{"users/bob/*"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cookie := wsHeader("Origin", "https://elsewhere.example", "Cookie", auth.DefaultCookieName+"="+bob)
	_, err = dialWS(t.Context(), ts.wsURL("stream=users/bob/a"), cookie)
	var ref *wsRefusal
	if !errors.As(err, &ref) || ref.status != http.StatusUnauthorized {
		t.Fatalf("cookie from another origin: %v, want 401", err)
	}
	// The same cookie from the server's own origin is a credential.
	cookie.Set("Origin", ts.front.URL)
	c := mustDialWS(t, ts.wsURL("stream=users/bob/a"), cookie)
	c.nextOf(t, "subscribed", 5*time.Second)
	// And from anywhere, a credential the page itself holds works.
	c2 := mustDialWS(t, ts.wsURL(""), wsHeader("Origin", "https://elsewhere.example"))
	c2.send(t, `{"type":"subscribe","streams":["users/bob/a"],"token":"`+bob+`"}`)
	c2.nextOf(t, "subscribed", 5*time.Second)
}

// A connection that names no streams and sends no subscribe is closed.
func TestWSSubscribeTimeout(t *testing.T) {
	old := wsSubscribeWait
	wsSubscribeWait = 200 * time.Millisecond
	t.Cleanup(func() { wsSubscribeWait = old })
	ts := startServer(t, Options{})
	c := mustDialWS(t, ts.wsURL(""), nil)
	_, code, reason := c.waitClose(t, 5*time.Second)
	if code != WSCloseTimeout || !strings.Contains(reason, "no subscribe") {
		t.Fatalf("closed with %d %q, want %d", code, reason, WSCloseTimeout)
	}
	testproc.Eventually(t, 5*time.Second, "the slot back", func() bool { return ts.slots() == 0 })
}

// The server pings every heartbeat interval; a client that answers stays,
// one that does not is closed within two intervals.
func TestWSPingPong(t *testing.T) {
	for _, mode := range wsModes {
		t.Run(mode.name, func(t *testing.T) {
			opts := mode.opts
			opts.Heartbeat = 100 * time.Millisecond
			ts := startServer(t, opts)
			good := mustDialWS(t, ts.wsURL("stream=p"), nil)
			mute := mustDialWS(t, ts.wsURL("stream=p"), nil)
			mute.noPong.Store(true)
			_, code, reason := mute.waitClose(t, 10*time.Second)
			if code != WSCloseTimeout || !strings.Contains(reason, "ping") {
				t.Fatalf("silent client closed with %d %q, want %d", code, reason, WSCloseTimeout)
			}
			testproc.Eventually(t, 10*time.Second, "five pings to the good client", func() bool { return good.pings.Load() >= 5 }, func() string {
				select {
				case <-good.done:
					return fmt.Sprintf("%d pings, closed %d %q, %v", good.pings.Load(), good.closeCode, good.closeReason, good.readErr)
				default:
					return fmt.Sprintf("%d pings, open", good.pings.Load())
				}
			})
			select {
			case <-good.done:
				t.Fatalf("the client that answers pings was closed: %d %q", good.closeCode, good.closeReason)
			default:
			}
			if n := testutil.ToFloat64(ts.m.subscriberClosed.WithLabelValues("pong_timeout")); n != 1 {
				t.Errorf("pong timeouts counted %v, want 1", n)
			}
		})
	}
}

// On drain a WebSocket gets what was queued, a reconnect message with the
// id to resume from, and a going-away close.
func TestWSDrain(t *testing.T) {
	ts := startServer(t, Options{})
	c := mustDialWS(t, ts.wsURL("stream=d"), nil)
	c.nextOf(t, "subscribed", 5*time.Second)
	for i := range 3 {
		if err := ts.Send(t.Context(), "d", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	ts.hub.drain(0)
	msgs, code, reason := c.waitClose(t, 5*time.Second)
	if code != ws.StatusGoingAway || !strings.Contains(reason, "draining") {
		t.Fatalf("closed with %d %q, want 1001 draining", code, reason)
	}
	if len(msgs) != 4 || wsData(msgs[:3]) != "0,1,2" || msgs[3].Type != "reconnect" || msgs[3].Reason != "drain" || msgs[3].LastEventID != msgs[2].ID {
		t.Fatalf("messages %+v: want the 3 events, then reconnect with the last one's id", msgs)
	}
	if n := testutil.ToFloat64(ts.m.subscriberClosed.WithLabelValues("drain")); n != 1 {
		t.Errorf("drain closes counted %v", n)
	}
	testproc.Eventually(t, 5*time.Second, "the slot back", func() bool { return ts.slots() == 0 })
}

// A WebSocket that stops reading is cut off when its queue overflows, as
// an SSE subscriber is; it is told to resume from its last id.
func TestWSOverflow(t *testing.T) {
	ts := startServer(t, Options{SubscriberQueue: 16, WriteTimeout: time.Minute})
	ts.refront(t, smallSendBuffers)
	gate := make(chan struct{})
	c, err := dialWSGated(t.Context(), ts.wsURL("stream=o"), nil, gate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	testproc.Eventually(t, 5*time.Second, "the subscriber", func() bool { return ts.hub.subscriberCount() == 1 })
	overflow := ts.m.subscriberClosed.WithLabelValues("overflow")
	msg := strings.Repeat("x", 64<<10)
	for i := 0; testutil.ToFloat64(overflow) == 0; i++ {
		if i == 2000 {
			t.Fatal("not cut off after 2000 events of 64 KiB")
		}
		if err := ts.Send(t.Context(), "o", msg); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	msgs, code, _ := c.waitClose(t, 10*time.Second)
	last := msgs[len(msgs)-1]
	if code != WSCloseTooMany || last.Type != "reconnect" || last.Reason != "overflow" || last.LastEventID != msgs[len(msgs)-2].ID {
		t.Fatalf("closed with %d after %+v, want %d after a reconnect message with the last event's id", code, last, WSCloseTooMany)
	}
}

// A credential that expires ends the connection with an expired message
// and 4401.
func TestWSCredentialExpiry(t *testing.T) {
	ts, tk, _ := startAuthServer(t, Options{})
	bob, _, err := tk.Mint("bob", []string{"users/bob/*"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := mustDialWS(t, ts.wsURL(""), nil)
	c.send(t, `{"type":"subscribe","streams":["users/bob/a"],"token":"`+bob+`"}`)
	c.nextOf(t, "subscribed", 5*time.Second)
	msgs, code, _ := c.waitClose(t, 10*time.Second)
	if code != WSCloseUnauthorized || len(msgs) == 0 || msgs[len(msgs)-1].Type != "expired" {
		t.Fatalf("closed with %d after %+v, want 4401 after an expired message", code, msgs)
	}
}

// Idle WebSockets hold no goroutine on the server.
func TestWSIdleConnectionsHoldNoGoroutine(t *testing.T) {
	ts := startServer(t, Options{})
	const n = 100
	conns := make([]*wsSub, n)
	for i := range conns {
		conns[i] = mustDialWS(t, ts.wsURL("stream=i"), nil)
		conns[i].nextOf(t, "subscribed", 5*time.Second)
	}
	// Each client has a reader goroutine of its own: count the server's.
	testproc.Eventually(t, 10*time.Second, "the server's goroutines to end", func() bool {
		return serverGoroutines() < n/10
	}, func() string { return fmt.Sprintf("%d server goroutines for %d connections", serverGoroutines(), n) })
	// They still answer: a message wakes a reader.
	conns[0].send(t, `{"type":"subscribe","streams":["j"]}`)
	if m := conns[0].nextOf(t, "subscribed", 5*time.Second); !slices.Equal(m.Streams, []string{"i", "j"}) {
		t.Fatalf("got %+v", m)
	}
}

// serverGoroutines counts goroutines running the server's WebSocket code
// (readers, writers, handlers).
func serverGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "sser.(*ServerImpl).serveWS") || strings.Contains(g, "sser.(*ServerImpl).wsReadOne") || strings.Contains(g, "sser.(*ServerImpl).writeWS") {
			n++
		}
	}
	return n
}

// Streams added and removed while events are published to all of them:
// a stream kept across a change misses nothing and gets nothing twice; an
// added stream starts right after the id of the change's subscribed
// message; a removed one stops. Then a new connection resuming from the
// last id gets exactly what the final set missed meanwhile.
func TestWSChangingStreamsIsExact(t *testing.T) {
	for _, mode := range wsModes {
		t.Run(mode.name, func(t *testing.T) {
			ts := startServer(t, mode.opts)
			ctx := t.Context()
			type pub struct {
				stream, msg string
				seq         uint64
			}
			var (
				mu   sync.Mutex
				pubs []pub
			)
			publishOne := func(i int) {
				ev := Event{Stream: []string{"a", "b", "c"}[i%3], Msg: strconv.Itoa(i)}
				p, err := ts.publish(ctx, []Event{ev})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				pubs = append(pubs, pub{ev.Stream, ev.Msg, p.First})
				mu.Unlock()
			}
			stop := make(chan struct{})
			stopped := make(chan struct{})
			var stopOnce sync.Once
			halt := func() {
				stopOnce.Do(func() { close(stop) })
				<-stopped
			}
			t.Cleanup(halt)
			go func() {
				defer close(stopped)
				// About 1,000 events a second: the history (1,000 events
				// a stream) holds what the resume below misses.
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					publishOne(i)
				}
			}()

			c := mustDialWS(t, ts.wsURL("stream=a"), nil)
			// Every message in order, and the set each applies to.
			var got []wsMsg
			read := func(events int) wsMsg {
				t.Helper()
				for {
					m := c.next(t, 10*time.Second)
					got = append(got, m)
					if m.Type == "event" {
						if events--; events <= 0 {
							return m
						}
					} else if events <= 0 && m.Type == "subscribed" {
						return m
					}
				}
			}
			read(0) // subscribed to a
			for _, change := range []string{
				`{"type":"subscribe","streams":["b"]}`,
				`{"type":"unsubscribe","streams":["a"]}`,
				`{"type":"subscribe","streams":["c","a"]}`,
				`{"type":"unsubscribe","streams":["b","c"]}`,
				`{"type":"subscribe","streams":["b"]}`,
			} {
				read(30)
				c.send(t, change)
				read(0)
			}
			read(30)
			c.close()
			last := ""
			for _, m := range got {
				if m.ID != "" {
					last = m.ID
				}
			}

			// Which events of each stream the client should have had:
			// those after the seq its set's subscribed id claims when the
			// stream came in, up to where it went out.
			posOf := func(id string) position {
				p, err := parsePosition(id)
				if err != nil {
					t.Fatalf("id %q: %v", id, err)
				}
				return p
			}
			var set []string
			var problems []string
			next := map[string]int{} // stream -> index in its published events of the next wanted
			byStream := func(stream string) []pub {
				mu.Lock()
				defer mu.Unlock()
				var out []pub
				for _, p := range pubs {
					if p.stream == stream {
						out = append(out, p)
					}
				}
				return out
			}
			for _, m := range got {
				switch m.Type {
				case "subscribed":
					for _, s := range m.Streams {
						if !slices.Contains(set, s) {
							// Wanted from its first event the id does not claim.
							claims := posOf(m.ID)
							ps := byStream(s)
							next[s] = len(ps)
							for i, p := range ps {
								if !claims.has(ts.origin, p.seq) {
									next[s] = i
									break
								}
							}
						}
					}
					set = m.Streams
				case "event":
					if !slices.Contains(set, m.Stream) {
						problems = append(problems, fmt.Sprintf("event %s of %s outside the set %v", m.Data, m.Stream, set))
						continue
					}
					ps := byStream(m.Stream)
					if i := next[m.Stream]; i >= len(ps) || ps[i].msg != m.Data {
						want := "nothing"
						if i < len(ps) {
							want = ps[i].msg
						}
						problems = append(problems, fmt.Sprintf("stream %s: got %s, want %s", m.Stream, m.Data, want))
					}
					next[m.Stream]++
				}
			}
			if len(problems) > 0 {
				t.Fatalf("%d problems, first: %q", len(problems), problems[:min(5, len(problems))])
			}

			// Resume the final set from the last id while events are still
			// published: exactly what was missed, then live.
			c2 := mustDialWS(t, ts.wsURL("stream=a&stream=b&lastEventID="+last), nil)
			var evs []wsMsg
			for {
				m := c2.next(t, 10*time.Second)
				if m.Type == "subscribed" {
					if m.Resume != "exact" {
						t.Errorf("resume %+v, want exact", m)
					}
					break
				}
				evs = append(evs, m) // the replay
			}
			if len(evs) == 0 {
				t.Fatal("nothing replayed: the test needs events missed between the connections")
			}
			evs = append(evs, c2.events(t, 10, 10*time.Second)...) // live
			halt()
			want := 0
			for _, s := range []string{"a", "b"} {
				want += len(byStream(s)) - next[s]
			}
			evs = append(evs, c2.events(t, want-len(evs), 10*time.Second)...)
			for _, m := range evs {
				ps := byStream(m.Stream)
				if i := next[m.Stream]; i >= len(ps) || ps[i].msg != m.Data {
					t.Fatalf("resumed: stream %s got %s out of turn", m.Stream, m.Data)
				}
				next[m.Stream]++
			}
		})
	}
}

// WebSockets count against the same connection caps as SSE and are shed
// the same way: refused before the upgrade, with the slot given back when
// a connection ends.
func TestWSConnectionLimits(t *testing.T) {
	// No watermark: the test sets the shedding itself.
	ts := startServer(t, Options{MaxConnectionsPerIP: 1, MemoryWatermark: -1})
	c := mustDialWS(t, ts.wsURL("stream=a"), nil)
	c.nextOf(t, "subscribed", 5*time.Second)
	for _, u := range []string{ts.wsURL("stream=a"), ts.url("stream=a")} {
		if strings.HasPrefix(u, "ws") {
			_, err := dialWS(t.Context(), u, nil)
			var ref *wsRefusal
			if !errors.As(err, &ref) || ref.status != http.StatusTooManyRequests || ref.header.Get("Retry-After") == "" {
				t.Fatalf("second WebSocket from one address: %v, want 429 with Retry-After", err)
			}
			continue
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("an SSE subscription beside the WebSocket: %d, want 429", resp.StatusCode)
		}
	}
	c.close()
	testproc.Eventually(t, 5*time.Second, "the slot back", func() bool { return ts.slots() == 0 })
	ts.memory.over.Store(true)
	_, err := dialWS(t.Context(), ts.wsURL("stream=a"), nil)
	var ref *wsRefusal
	if !errors.As(err, &ref) || ref.status != http.StatusServiceUnavailable || !strings.Contains(ref.body, "shedding") {
		t.Fatalf("above the memory watermark: %v, want 503", err)
	}
	ts.memory.over.Store(false)
	mustDialWS(t, ts.wsURL("stream=a"), nil).nextOf(t, "subscribed", 5*time.Second)
	if n := testutil.ToFloat64(ts.m.refused.WithLabelValues("connections_per_ip")); n != 2 {
		t.Errorf("refusals per address counted %v, want 2", n)
	}
}
