package sser

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/sser-dev/sser/pkg/auth"
)

// WebSocket subscriptions: GET /events (the SSE handler's path) with
// Upgrade: websocket. They pass the same checks as an SSE subscription
// (memory, connection caps, credentials, streams, AllowStream) and then
// the upgraded connection is a hijacked subscriber (hijack.go) whose
// frames the hub encodes as WebSocket messages (wsframe.go). The same
// writers, clock and close watcher serve it, so an idle WebSocket costs no
// goroutine either: the clock sends its pings, and on Linux the close
// watcher also says when the client sent something, and a goroutine is
// started to read it. Where that cannot be (TLS in front of the socket,
// DisableHijack, a handler whose context ends with the request, no epoll),
// the handler's goroutine reads instead, blocked until the client writes.
//
// The protocol is JSON text messages (wsproto.go): the client subscribes
// (on the URL, or with its first message), changes its streams with
// subscribe and unsubscribe messages, and gets events with the same ids
// an SSE subscriber of the same streams gets.

var (
	// wsSubscribeWait bounds the wait for the first subscribe of a
	// connection that named no streams on its URL.
	wsSubscribeWait = 10 * time.Second
	// wsCloseLinger is how long the server keeps its side after writing
	// a close frame: closing a socket with unread input resets it, and
	// the reset can overtake the close frame.
	wsCloseLinger = time.Second
)

const (
	// wsReadTimeout bounds reading the rest of a frame once it has begun.
	wsReadTimeout = 10 * time.Second
	// wsMaxMessage bounds a client message: a subscribe naming the most
	// streams allowed, with a long id and a token, fits many times over.
	wsMaxMessage = 64 << 10
	// A client may send wsMessageBurst messages at once, then
	// wsMessageRate a second: each subscribe or unsubscribe takes the
	// hub's lock.
	wsMessageBurst = 32
	wsMessageRate  = 4
)

// wsConn is a WebSocket subscriber's state beyond its hijacked socket.
type wsConn struct {
	// Set before the connection is handed over, then read only.
	principal *auth.Principal // nil without authentication
	req       *http.Request   // for AllowStream; nil when none is set

	// Guarded by the subscriber's mu.
	watch     *closeWatcher // the close watcher that starts reads; nil: a goroutine reads
	reading   bool          // a reader has the connection
	lastRead  int64         // monoNow of the last frame read
	pingAt    int64         // monoNow the last ping was written; 0: none outstanding
	closeCode ws.StatusCode // the close to send, when set by a reader or a missed pong
	closeText string
	pongLate  bool   // closed for not answering pings
	counted   bool   // in sser_websocket_connections
	lastFrame []byte // the last frame written that carries an id

	// The reader's (one at a time).
	pending  []byte // what net/http had read past the handshake
	tokens   float64
	tokensAt int64
}

// isWebSocket reports whether r asks for a WebSocket.
func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") && headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// wsEndpoint names WebSocket subscriptions in metrics and logs.
const wsEndpoint = "websocket"

func (s *ServerImpl) serveWS(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if s.opts.DisableWebSocket {
		s.writeError(w, r, wsEndpoint, http.StatusBadRequest, "WebSocket subscriptions are turned off on this server; subscribe with SSE (no Upgrade header)", "")
		return
	}
	if status, msg := wsHandshakeProblem(r); status != 0 {
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		s.writeError(w, r, wsEndpoint, status, msg, "")
		return
	}
	originOK, cookies := s.wsOrigin(r)
	if !originOK {
		s.writeError(w, r, wsEndpoint, http.StatusForbidden, "WebSocket from origin "+strconv.Quote(truncate(r.Header.Get("Origin"), 200))+" is not allowed: add it to the CORS origins (--cors-origins)", "")
		return
	}
	release, ok := s.admit(w, r, wsEndpoint)
	if !ok {
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			release()
		}
	}()
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, wsEndpoint, http.StatusBadRequest, "malformed query string: "+err.Error(), "")
		return
	}
	streams := q[QueryParameterName]
	if len(streams) > s.opts.MaxStreamsPerConnection {
		s.m.refused.WithLabelValues("streams_per_connection").Inc()
		s.writeError(w, r, wsEndpoint, http.StatusBadRequest, "at most "+strconv.Itoa(s.opts.MaxStreamsPerConnection)+" streams per connection, got "+strconv.Itoa(len(streams)), "")
		return
	}
	for _, name := range streams {
		if err := ValidateStreamName(name); err != nil {
			s.writeError(w, r, wsEndpoint, http.StatusBadRequest, err.Error(), "")
			return
		}
	}
	slices.Sort(streams)
	streams = slices.Compact(streams)
	c := &wsConn{}
	if s.opts.AllowStream != nil {
		c.req = r
	}
	var expires time.Time
	if s.opts.Authenticate != nil {
		ar := r
		if !cookies {
			ar = r.Clone(r.Context())
			ar.Header.Del("Cookie")
		}
		p, err := s.subscriberPrincipal(ar)
		// Without streams on the URL the credential may come with the
		// first subscribe instead.
		if err != nil && (len(streams) > 0 || !errors.Is(err, auth.ErrNoCredential)) {
			msg := s.credentialProblem(wsEndpoint, err)
			s.log.V(1).Info("subscriber not authenticated", "reason", err.Error(), "url", auth.RedactURL(r.URL), "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="sser"`)
			s.writeError(w, r, wsEndpoint, http.StatusUnauthorized, msg, "")
			return
		}
		if err == nil {
			c.principal, expires = p, p.Expires
		}
	}
	if werr := s.wsAllowed(c, streams); werr != nil {
		s.writeError(w, r, wsEndpoint, http.StatusForbidden, werr.msg, "")
		return
	}
	from, lastID, ok := s.resumePoint(w, r, q, wsEndpoint)
	if !ok {
		return
	}
	if !s.awaitWarm(ctx, w, r, wsEndpoint) {
		return
	}

	conn, rw, _, err := ws.HTTPUpgrader{Timeout: s.opts.WriteTimeout}.Upgrade(r, w)
	if err != nil {
		// The upgrader answered (or the connection is gone).
		if conn != nil {
			_ = conn.Close()
		}
		s.log.V(1).Info("WebSocket upgrade failed", "error", err.Error(), "remote", r.RemoteAddr)
		return
	}
	if n := rw.Reader.Buffered(); n > 0 {
		c.pending, _ = rw.Reader.Peek(n)
		c.pending = slices.Clone(c.pending)
	}
	resuming := lastID != ""
	if len(streams) == 0 {
		m, werr := s.wsFirstSubscribe(ctx, conn, c, r)
		if werr != nil {
			s.wsRefuseNow(conn, werr)
			s.lingerClose(conn, release)
			handedOff = true
			return
		}
		streams, from, resuming = m.Streams, m.from, m.LastEventID != ""
		if c.principal != nil {
			expires = c.principal.Expires
		}
	}

	sub := newConnSubscriber(streams, s.opts.SubscriberQueue)
	sub.ws = c
	sub.selectWS(streams)
	sub.group = s.writers.joinGroup(ctx)
	res, ok := s.hub.subscribe(sub, from, resuming, 0)
	if !ok {
		s.writers.leaveGroup(sub.group)
		s.wsRefuseNow(conn, &wsError{code: ws.StatusGoingAway, msg: "server is shutting down"})
		s.lingerClose(conn, release)
		handedOff = true
		return
	}
	s.m.connectionsTotal.Inc()
	if res.resumed {
		result := "exact"
		if res.lost {
			result = "lost"
		}
		s.m.resumes.WithLabelValues(result).Inc()
	}
	if !s.writers.enter() {
		// The server is stopping: its shutdown already closed sub.
		s.hub.unsubscribe(sub)
		s.writers.leaveGroup(sub.group)
		_ = conn.Close()
		return
	}
	handedOff = true
	if res.truncated {
		// The oldest part of what the client missed, then the connection
		// ends: it resumes from the last event for the rest.
		sub.mu.Lock()
		c.closeCode, c.closeText = WSCloseReplayPartial, "replay partial: reconnect with your last id for the rest"
		sub.mu.Unlock()
		sub.close(reasonNone)
	} else {
		sub.mu.Lock()
		c.counted = true
		sub.mu.Unlock()
		s.m.wsConnections.Inc()
	}
	now := monoNow()
	hc := &hijacked{conn: conn, pool: s.writers, release: release, running: true, lastWrite: now}
	sub.mu.Lock()
	sub.hc = hc
	c.lastRead = now
	if sub.closed && sub.reason == reasonShutdown {
		hc.hurry()
	}
	sub.mu.Unlock()
	pending := len(c.pending) > 0
	polled := s.canPoll(ctx, conn) && s.writers.watchReadable(sub)
	s.scheduleConn(sub, now, expires)
	s.writeWS(sub)
	if polled {
		if pending {
			// Already read from the socket: epoll will not tell.
			s.wsReadable(sub)
		}
		return
	}
	// This goroutine is the connection's reader until it ends.
	sub.mu.Lock()
	c.reading = true
	sub.mu.Unlock()
	for s.wsReadOne(sub, false) {
	}
}

// wsHandshakeProblem is what is wrong with r as a WebSocket handshake
// (status 0: nothing), checked before the upgrader answers in plain text.
func wsHandshakeProblem(r *http.Request) (int, string) {
	switch {
	case r.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, "method " + r.Method + " not allowed; a WebSocket opens with GET"
	case r.ProtoMajor != 1 || r.ProtoMinor < 1:
		return http.StatusBadRequest, "a WebSocket opens over HTTP/1.1"
	case r.Header.Get("Sec-WebSocket-Version") == "":
		return http.StatusBadRequest, "missing Sec-WebSocket-Version"
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version: this server speaks version 13"
	case len(r.Header.Get("Sec-WebSocket-Key")) != 24:
		return http.StatusBadRequest, "missing or malformed Sec-WebSocket-Key"
	}
	return 0, ""
}

// wsOrigin decides a WebSocket's Origin. A browser always sends one and a
// page cannot forge it; and unlike an EventSource, a browser does not
// apply CORS to a WebSocket, so the server must. Allowed: no Origin (not
// a browser), the request's own host, or an origin CORSOrigins lists, as
// SSE's CORS answer allows it. With "*" any origin is allowed but, as with
// SSE, never with the visitor's cookies (cookies is false).
func (s *ServerImpl) wsOrigin(r *http.Request) (ok, cookies bool) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true, true
	}
	if origin != "null" {
		if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
			return true, true
		}
		if slices.Contains(s.opts.CORSOrigins, origin) {
			return true, true
		}
	}
	if slices.Contains(s.opts.CORSOrigins, "*") {
		return true, false
	}
	return false, false
}

// wsAllowed checks that the connection may read every one of streams:
// its credential grants them, and AllowStream allows them.
func (s *ServerImpl) wsAllowed(c *wsConn, streams []string) *wsError {
	for _, name := range streams {
		if p := c.principal; p != nil && !p.Allows(name) {
			s.m.authFailures.WithLabelValues(wsEndpoint).Inc()
			s.log.V(1).Info("subscription not granted", "stream", name, "subject", p.Subject, "transport", wsEndpoint)
			return &wsError{code: WSCloseForbidden, msg: "the credential does not grant stream " + strconv.Quote(name)}
		}
		if allow := s.opts.AllowStream; allow != nil && !allow(c.req, name) {
			s.log.V(1).Info("subscription refused", "stream", name, "transport", wsEndpoint)
			return &wsError{code: WSCloseForbidden, msg: "stream " + strconv.Quote(name) + " is not allowed"}
		}
	}
	return nil
}

// wsFirstSubscribe reads the first message of a connection that named no
// streams on its URL, in the handler's goroutine: a subscribe, with the
// credential when the connection brought none.
func (s *ServerImpl) wsFirstSubscribe(ctx context.Context, conn net.Conn, c *wsConn, r *http.Request) (wsClientMessage, *wsError) {
	_ = conn.SetReadDeadline(time.Now().Add(wsSubscribeWait))
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	src := &wsSource{c: c, conn: conn}
	var data []byte
	for data == nil {
		var err error
		data, err = wsReadMessage(src, func(p []byte) {
			_ = conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
			_, _ = conn.Write(ws.MustCompileFrame(ws.NewPongFrame(p)))
		})
		var werr *wsError
		switch {
		case errors.As(err, &werr):
			return wsClientMessage{}, werr
		case ctx.Err() != nil:
			return wsClientMessage{}, &wsError{code: ws.StatusGoingAway, msg: "server stopping"}
		case isTimeout(err):
			return wsClientMessage{}, &wsError{code: WSCloseTimeout, msg: "no subscribe within " + wsSubscribeWait.String() + " of connecting"}
		case err != nil:
			return wsClientMessage{}, &wsError{code: ws.StatusGoingAway, msg: "connection ended before a subscribe"}
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	m, werr := parseWSMessage(data, s.opts.MaxStreamsPerConnection)
	if werr != nil {
		return m, werr
	}
	if m.Type != wsSubscribe {
		return m, badMessage("the first message must be a subscribe")
	}
	if m.Token != "" && s.opts.Authenticate != nil {
		ar := r.Clone(r.Context())
		ar.Header.Set("Authorization", "Bearer "+m.Token)
		p, err := s.subscriberPrincipal(ar)
		if err != nil {
			s.log.V(1).Info("subscriber not authenticated", "reason", err.Error(), "remote", r.RemoteAddr, "transport", wsEndpoint)
			return m, &wsError{code: WSCloseUnauthorized, msg: s.credentialProblem(wsEndpoint, err)}
		}
		c.principal = p
	}
	if s.opts.Authenticate != nil && c.principal == nil {
		return m, &wsError{code: WSCloseUnauthorized, msg: "credentials required: a ticket or token as Authorization: Bearer, ?ticket=, ?access_token=, cookie, or \"token\" in the first subscribe"}
	}
	return m, s.wsAllowed(c, m.Streams)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// wsRefuseNow writes an error message (for sser's own codes) and a close
// frame on a connection no writer has yet.
func (s *ServerImpl) wsRefuseNow(conn net.Conn, werr *wsError) {
	s.countWSError(werr)
	frames := [][]byte{wsCloseFrame(werr.code, werr.msg)}
	if werr.code >= 4000 {
		frames = append([][]byte{wsErrorFrame(werr.code, werr.msg)}, frames...)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	_ = writeWSFrames(conn, frames, s.m)
}

// countWSError counts a refused WebSocket client in
// sser_bad_requests_total{endpoint="websocket",code} (the close code).
func (s *ServerImpl) countWSError(werr *wsError) {
	if werr.code == ws.StatusGoingAway || werr.code == ws.StatusNormalClosure {
		return
	}
	s.m.badRequests.WithLabelValues(wsEndpoint, strconv.Itoa(int(werr.code))).Inc()
	s.log.V(1).Info("WebSocket client refused", "code", int(werr.code), "error", werr.msg)
}

// lingerClose shuts the sending side of conn and closes it wsCloseLinger
// later, then gives back its connection slot.
func (s *ServerImpl) lingerClose(conn net.Conn, release func()) {
	shutdownWrite(conn)
	time.AfterFunc(wsCloseLinger, func() {
		_ = conn.Close()
		release()
	})
}

// shutdownWrite sends the client a FIN after what was written, so it
// reads the close frame to the end while the server keeps its side open.
func shutdownWrite(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_WR) })
		}
	}
}

// canPoll reports whether the connection's reads can be started by the
// close watcher: the socket itself (TLS keeps records the socket does not
// show), and a handler that need not stay to keep the connection (as for
// hijacking SSE, see canHijack).
func (s *ServerImpl) canPoll(ctx context.Context, conn net.Conn) bool {
	if s.opts.DisableHijack || ctx.Value(http.ServerContextKey) != nil {
		return false
	}
	_, ok := conn.(syscall.Conn)
	return ok
}

// wsSource reads what net/http had read past the handshake, then the
// connection. One reader at a time.
type wsSource struct {
	c    *wsConn
	conn net.Conn
}

func (r *wsSource) Read(p []byte) (int, error) {
	if len(r.c.pending) > 0 {
		n := copy(p, r.c.pending)
		r.c.pending = r.c.pending[n:]
		if len(r.c.pending) == 0 {
			r.c.pending = nil
		}
		return n, nil
	}
	return r.conn.Read(p)
}

// wsReadable is the close watcher's news for a polled connection: the
// client sent something (or closed). A goroutine reads it.
func (s *ServerImpl) wsReadable(sub *subscriber) {
	sub.mu.Lock()
	hc, c := sub.hc, sub.ws
	if hc == nil || hc.ended || c.reading {
		sub.mu.Unlock()
		return
	}
	c.reading = true
	sub.mu.Unlock()
	go func() {
		if !s.wsReadOne(sub, true) {
			return
		}
		sub.mu.Lock()
		c.reading = false
		if !hc.ended && !sub.closed && !c.watch.rearm(sub, hc.conn, hc.token) {
			// No longer watched: read from a goroutine of its own.
			c.watch, c.reading = nil, true
			sub.mu.Unlock()
			_ = hc.conn.SetReadDeadline(time.Time{})
			for s.wsReadOne(sub, false) {
			}
			return
		}
		sub.mu.Unlock()
	}()
}

// errWSClientClose is a close frame from the client; code is echoed.
type errWSClientClose struct{ code ws.StatusCode }

func (e errWSClientClose) Error() string { return "client closed with " + strconv.Itoa(int(e.code)) }

// wsReadMessage reads frames from r until it has a whole text message, or
// a control frame outside a fragmented message (then nil, nil). Pings are
// answered through pong. A client that breaks the protocol gets a
// *wsError with the close code it earned; a close frame is an
// errWSClientClose.
func wsReadMessage(r io.Reader, pong func(payload []byte)) ([]byte, error) {
	hb := make([]byte, ws.MaxHeaderSize-2)
	var msg []byte
	state := ws.StateServerSide
	for {
		h, err := ws.ReadHeaderBuffer(r, hb)
		if err != nil {
			return nil, err
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return nil, &wsError{code: ws.StatusProtocolError, msg: err.Error()}
		}
		if h.OpCode.IsData() || h.OpCode == ws.OpContinuation {
			if int64(len(msg))+h.Length > wsMaxMessage {
				return nil, &wsError{code: ws.StatusMessageTooBig, msg: "messages are at most " + strconv.Itoa(wsMaxMessage) + " bytes"}
			}
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(r, payload); err != nil {
			return nil, err
		}
		ws.Cipher(payload, h.Mask, 0)
		switch h.OpCode {
		case ws.OpPing, ws.OpPong:
			if h.OpCode == ws.OpPing {
				pong(payload)
			}
			if state.Fragmented() {
				continue
			}
			return nil, nil
		case ws.OpClose:
			code := ws.StatusNormalClosure
			if len(payload) >= 2 {
				if c, reason := ws.ParseCloseFrameData(payload); ws.CheckCloseFrameData(c, reason) == nil {
					code = c
				} else {
					return nil, &wsError{code: ws.StatusProtocolError, msg: "malformed close frame"}
				}
			}
			return nil, errWSClientClose{code: code}
		case ws.OpBinary:
			return nil, &wsError{code: ws.StatusUnsupportedData, msg: "binary messages are not understood: send JSON text"}
		}
		msg = append(msg, payload...)
		if !h.Fin {
			state = state.Set(ws.StateFragmented)
			continue
		}
		if !utf8.Valid(msg) {
			return nil, &wsError{code: ws.StatusInvalidFramePayloadData, msg: "text message is not valid UTF-8"}
		}
		if msg == nil {
			msg = []byte{}
		}
		return msg, nil
	}
}

// wsReadOne reads and handles one message (or control frame) of a
// subscribed connection; false when the connection is ending and the
// reader should stop. polled: the close watcher said there is input, and
// the rest of a frame must come within wsReadTimeout; otherwise the wait
// for a frame is unbounded (pings find a client that went away).
func (s *ServerImpl) wsReadOne(sub *subscriber, polled bool) bool {
	hc, c := sub.hc, sub.ws
	if polled {
		_ = hc.conn.SetReadDeadline(time.Now().Add(wsReadTimeout))
	}
	data, err := wsReadMessage(&wsSource{c: c, conn: hc.conn}, func(p []byte) {
		sub.push(ws.MustCompileFrame(ws.NewPongFrame(p)), nil) // dropped when the queue is full
	})
	now := monoNow()
	sub.mu.Lock()
	c.lastRead = now
	ended := hc.ended || hc.gone
	sub.mu.Unlock()
	if ended {
		return false
	}
	var werr *wsError
	var closed errWSClientClose
	switch {
	case errors.As(err, &closed):
		s.wsClose(sub, &wsError{code: closed.code}, false)
		return false
	case errors.As(err, &werr):
		s.wsClose(sub, werr, false)
		return false
	case err != nil:
		// The client went away, or stalled in the middle of a frame.
		sub.mu.Lock()
		hc.gone = true
		run, _ := sub.wakeLocked()
		sub.mu.Unlock()
		sub.wakeUp(run, nil)
		return false
	case data == nil:
		return true // a control frame
	}
	if werr := s.wsHandle(sub, data, now); werr != nil {
		s.wsClose(sub, werr, true)
		return false
	}
	return true
}

// wsHandle applies a message from a subscribed client.
func (s *ServerImpl) wsHandle(sub *subscriber, data []byte, now int64) *wsError {
	c := sub.ws
	if !c.allowMessage(now) {
		return &wsError{code: WSCloseTooMany, msg: "too many messages: at most " + strconv.Itoa(wsMessageRate) + " a second"}
	}
	m, werr := parseWSMessage(data, s.opts.MaxStreamsPerConnection)
	switch {
	case werr != nil:
		return werr
	case m.LastEventID != "":
		return badMessage("lastEventId is taken on a connection's first subscribe only: streams added later start at the connection's position")
	case m.Token != "":
		return badMessage("token is taken on a connection's first subscribe only")
	}
	// Only this reader changes sub.streams (through resubscribe).
	streams := withStreams(sub.streams, m.Type, m.Streams)
	if len(streams) > s.opts.MaxStreamsPerConnection {
		s.m.refused.WithLabelValues("streams_per_connection").Inc()
		return badMessage("at most %d streams per connection, this would make %d", s.opts.MaxStreamsPerConnection, len(streams))
	}
	if m.Type == wsSubscribe {
		if werr := s.wsAllowed(c, m.Streams); werr != nil {
			return werr
		}
	}
	if s.hub.resubscribe(sub, streams) {
		s.m.wsMessages.WithLabelValues(m.Type).Inc()
	}
	return nil
}

// allowMessage takes a token of the message rate.
func (c *wsConn) allowMessage(now int64) bool {
	if c.tokensAt == 0 {
		c.tokens = wsMessageBurst
	} else {
		c.tokens = min(wsMessageBurst, c.tokens+float64(now-c.tokensAt)/float64(time.Second)*wsMessageRate)
	}
	c.tokensAt = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// wsClose ends a subscribed connection for werr: its subscription stops
// at once; what was queued before it is written, then (when errorFrame)
// an error message explaining werr, and a close frame with its code.
func (s *ServerImpl) wsClose(sub *subscriber, werr *wsError, errorFrame bool) {
	if errorFrame || werr.code != ws.StatusNormalClosure && werr.code < 4000 {
		s.countWSError(werr)
	}
	c := sub.ws
	sub.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeText = werr.code, werr.msg
	}
	sub.mu.Unlock()
	if errorFrame && werr.code >= 4000 {
		sub.pushUnbounded(wsErrorFrame(werr.code, werr.msg))
	}
	s.hub.unsubscribe(sub)
	sub.close(reasonNone)
}

// writeWS is a WebSocket connection's writer, as writeConn is an SSE
// one's: everything queued (frames encoded whole), a ping when the clock
// asked for one, in writes of up to writeChunk bytes; until nothing is
// left. A closed subscriber gets its last frames (wsLast) and its close.
func (s *ServerImpl) writeWS(sub *subscriber) {
	hc, c := sub.hc, sub.ws
	var written batch
	var wroteAt, pinged int64
	for {
		sub.mu.Lock()
		if written.frames != nil {
			if f := lastIDFrame(written.frames); f != nil {
				c.lastFrame = f
			}
			clear(written.frames)
			sub.recycleLocked(written)
			written = batch{}
		}
		if wroteAt != 0 {
			hc.lastWrite = wroteAt
		}
		if pinged != 0 {
			// From before the write: an answer may come before the
			// writer takes the time after it.
			c.pingAt, pinged = pinged, 0
		}
		b := sub.takeLocked()
		q := b.frames
		beat := hc.beat
		hc.beat = false
		closed, reason, gone := sub.closed, sub.reason, hc.gone
		code, text, late := c.closeCode, c.closeText, c.pongLate
		if len(q) == 0 && !beat && !closed && !gone {
			hc.running = false
			sub.mu.Unlock()
			return
		}
		if !gone || late {
			hc.setDeadline(monoNow(), s.opts.WriteTimeout)
		}
		lastFrame := c.lastFrame
		sub.mu.Unlock()

		switch {
		case gone:
			if late {
				s.m.subscriberClosed.WithLabelValues("pong_timeout").Inc()
				_ = writeWSFrames(hc.conn, [][]byte{wsCloseFrame(code, text)}, s.m)
			}
			s.endWS(sub, false)
			return
		case closed:
			last, linger := wsLast(q, reason, code, text, lastFrame)
			err := writeWSFrames(hc.conn, last, s.m)
			s.endWS(sub, linger && err == nil)
			return
		}
		frames := q
		start := monoNow()
		if beat {
			frames = append(frames, wsPingFrame)
		}
		err := writeWSFrames(hc.conn, frames, s.m)
		if beat && err == nil {
			pinged = start
		}
		if len(frames) > 0 && len(q) > 0 {
			written = batch{frames: frames}
		}
		if err != nil {
			sub.mu.Lock()
			hc.gone = true
			sub.mu.Unlock()
			continue
		}
		wroteAt = monoNow()
		s.m.observeDelivery(b.born)
	}
}

// wsLast is what a closed WebSocket subscriber is sent: what was queued
// (unless it overflowed or the server stops), a message saying why (with
// the id the client holds once it has read what is sent; lastFrame is
// the last written that carries one), and the close frame; and whether to
// linger for the client's close.
func wsLast(q [][]byte, reason closeReason, code ws.StatusCode, text string, lastFrame []byte) ([][]byte, bool) {
	lastID := wsFrameID(lastFrame)
	if reason != reasonOverflow && reason != reasonShutdown {
		if f := lastIDFrame(q); f != nil {
			lastID = wsFrameID(f)
		}
	}
	if code != 0 {
		// A refused message or a partial replay: the client has
		// everything up to its last id.
		if code == WSCloseReplayPartial {
			q = append(q, wsReconnectFrame("replay_partial", lastID))
		}
		return append(q, wsCloseFrame(code, text)), true
	}
	switch reason {
	case reasonDrain:
		return append(q, wsReconnectFrame("drain", lastID), wsCloseFrame(ws.StatusGoingAway, "draining: reconnect and resume with your last id")), true
	case reasonMaxAge:
		return append(q, wsReconnectFrame("max_age", lastID), wsCloseFrame(ws.StatusGoingAway, "maximum connection time: reconnect and resume with your last id")), true
	case reasonExpired:
		return append(q, wsExpiredFrame, wsCloseFrame(WSCloseUnauthorized, "credential expired: reconnect with a new one and your last id")), true
	case reasonOverflow:
		return [][]byte{wsReconnectFrame("overflow", lastID), wsCloseFrame(WSCloseTooMany, "fell behind: reconnect and resume with your last id")}, true
	}
	return [][]byte{wsCloseFrame(ws.StatusGoingAway, "server stopping: reconnect and resume with your last id")}, false
}

// lastIDFrame is the last of frames that carries an id, nil when none.
func lastIDFrame(frames [][]byte) []byte {
	for i := len(frames) - 1; i >= 0; i-- {
		if wsFrameID(frames[i]) != "" {
			return frames[i]
		}
	}
	return nil
}

// writeWSFrames writes frames, WebSocket frames whole, joined into writes
// of up to writeChunk bytes, and counts their bytes.
func writeWSFrames(conn net.Conn, frames [][]byte, m *metrics) error {
	n, err := writeJoined(conn, frames)
	m.bytesWritten.Add(float64(n))
	return err
}

// endWS unsubscribes a WebSocket connection, stops watching it, and
// closes it (after wsCloseLinger when linger) and gives back its slot;
// once.
func (s *ServerImpl) endWS(sub *subscriber, linger bool) {
	hc, c := sub.hc, sub.ws
	sub.mu.Lock()
	if hc.ended {
		sub.mu.Unlock()
		return
	}
	hc.ended = true
	sub.closed = true
	sub.queue, sub.spare = nil, nil
	counted := c.counted
	c.counted, c.lastFrame = false, nil
	sub.mu.Unlock()
	s.hub.unsubscribe(sub)
	s.hub.clock.remove(sub) // a partial replay's was never subscribed
	s.writers.forget(hc)
	if counted {
		s.m.wsConnections.Dec()
	}
	finish := func() {
		_ = hc.conn.Close()
		hc.release()
		s.writers.leave(sub)
	}
	if !linger {
		finish()
		return
	}
	shutdownWrite(hc.conn)
	time.AfterFunc(wsCloseLinger, finish)
}

// wsBeat is the clock's look at a WebSocket connection, every heartbeat
// interval, busy or not: a ping when the last one was answered (anything
// read since counts: browsers and most clients answer pings by
// themselves), and the connection ends when one has gone unanswered for
// two intervals.
func (sub *subscriber) wsBeat(now int64, b beatTiming) int64 {
	sub.mu.Lock()
	hc, c := sub.hc, sub.ws
	if hc == nil || hc.ended || hc.gone || sub.closed {
		sub.mu.Unlock()
		return 0
	}
	if hc.beat {
		// The last ping is not written yet.
		sub.mu.Unlock()
		return b.next(now)
	}
	if c.pingAt != 0 && c.lastRead < c.pingAt {
		if now-c.pingAt < 2*b.quiet {
			sub.mu.Unlock()
			return b.next(now)
		}
		c.closeCode, c.closeText, c.pongLate = WSCloseTimeout, "no answer to pings: reconnect and resume with your last id", true
		hc.gone = true
	} else {
		hc.beat = true
		c.pingAt = 0
		if !hc.running {
			// Idle: hold no queue.
			sub.spare = nil
			if len(sub.queue) == 0 {
				sub.queue = nil
			}
		}
	}
	run, _ := sub.wakeLocked()
	gone := hc.gone
	sub.mu.Unlock()
	sub.wakeUp(run, nil)
	if gone {
		return 0
	}
	return b.next(now)
}

// watchReadable has the close watcher tell when sub's client sends
// something (or closes); false when it cannot.
func (p *connWriters) watchReadable(sub *subscriber) bool {
	p.mu.Lock()
	w := p.watch
	p.mu.Unlock()
	tok := w.addReadable(sub, sub.hc.conn)
	if tok == 0 {
		return false
	}
	sub.mu.Lock()
	sub.hc.token = tok
	sub.ws.watch = w
	sub.mu.Unlock()
	return true
}
