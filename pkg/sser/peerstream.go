package sser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The streaming peer delivery: one long-lived POST /api/json/v1/send per
// peer with Content-Type application/x-ndjson. The request body is a
// stream of lines, one JSON object each:
//
//	{"events":[<Event>...],"heldFrom":N}   a batch (heldFrom as X-Sser-Held-From)
//	{}                                     a keepalive: no answer of its own
//
// The answer is 200 with Content-Type application/x-ndjson once the first
// line is in, then one line per batch line, in order:
//
//	{"accepted":n}                         the batch was applied (n may be 0)
//	{"error":"...","status":<http code>}   it was refused; the stream ends
//
// Every batch line is checked exactly like a one-shot POST
// (acceptPeerBatch), and a stream carries one origin.
//
// Answers are not sent one by one: on a quiet stream each would wake the
// sender as often as the batches wake the receiver. The receiver holds
// them, and sends all it holds at once when a keepalive line comes (a
// sender that wants its answers writes one, right after a batch line when
// it can), when a line is refused, or at the latest streamAnswerDelay
// after the oldest. The sender keeps a window of events in flight and
// moves its cursor on each {"accepted":n}; it asks for answers when half
// its window is in flight or its oldest line has waited a second; a line
// refused, a stream broken or answers late make it reopen and send again
// from what was acknowledged (the receiver drops duplicates).
//
// The server answers only after the first line so that the sender can ask
// with "Expect: 100-continue": a replica that predates streaming refuses
// the Content-Type (415) without reading the body and, because of that
// header, answers at once and closes the connection, instead of first
// waiting its read timeout for a body that never ends.
const (
	streamContentType = "application/x-ndjson"
	// streamAnswerDelay is the longest a receiver holds answers.
	streamAnswerDelay = 2 * time.Second
	// maxPeerStreamsPerIP bounds the delivery streams one address may hold
	// open: a peer needs one, and a few more while a broken one times out.
	maxPeerStreamsPerIP = 4
	// maxAnswerLine bounds an answer line read by a sender.
	maxAnswerLine = 64 << 10
)

var (
	keepaliveLine = []byte("{}\n")
	// errStreamUnsupported is a peer that does not speak the streaming
	// delivery: the sender falls back to one POST per batch.
	errStreamUnsupported = errors.New("sser: peer does not accept streamed deliveries")
	errLineTooLong       = errors.New("line too long")
	errStreamClosed      = errors.New("sser: delivery stream closed")
)

// streamLine is one line a sender writes.
type streamLine struct {
	Events   json.RawMessage `json:"events"`
	HeldFrom uint64          `json:"heldFrom,omitempty"`
}

// streamError is a refusal line.
type streamError struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
}

// peerStreams is the registry of open delivery streams: at most perIP per
// remote address, and all of them ended when the server stops (the
// http.Server's Shutdown waits for them but does not end them).
type peerStreams struct {
	perIP int
	// keepalives counts keepalive lines received, for tests.
	keepalives atomic.Uint64

	mu     sync.Mutex
	byIP   map[string]int
	ends   map[uint64]func() // by stream number
	last   uint64
	closed bool
}

func newPeerStreams(perIP int) *peerStreams {
	return &peerStreams{perIP: perIP, byIP: make(map[string]int), ends: make(map[uint64]func())}
}

// open registers a stream from ip whose handler end makes return; it
// reports which limit refuses it, if one does.
func (p *peerStreams) open(ip string, end func()) (release func(), refused string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, "closed"
	}
	if p.byIP[ip] >= p.perIP {
		return nil, "peer_streams_per_ip"
	}
	p.byIP[ip]++
	p.last++
	key := p.last
	p.ends[key] = end
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.ends, key)
		if p.byIP[ip]--; p.byIP[ip] <= 0 {
			delete(p.byIP, ip)
		}
	}, ""
}

// closeAll ends every open stream and refuses new ones.
func (p *peerStreams) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, end := range p.ends {
		end()
	}
}

// serveSendStream serves one delivery stream until the sender ends it, a
// line is refused, the sender is silent for InternalReadTimeout, or the
// server stops.
func (s *ServerImpl) serveSendStream(w http.ResponseWriter, r *http.Request) {
	ip := remoteIP(r)
	rc := http.NewResponseController(w)
	var ending atomic.Bool
	end := func() {
		// Wakes the handler from its read; it answers that it is stopping.
		ending.Store(true)
		_ = rc.SetReadDeadline(time.Now())
	}
	release, refused := s.peerStreams.open(ip, end)
	switch refused {
	case "":
	case "closed":
		s.writeError(w, r, "send", http.StatusServiceUnavailable, "server is shutting down", "")
		return
	default:
		s.refuse(w, r, "send", refused, http.StatusTooManyRequests, time.Second,
			"at most "+strconv.Itoa(s.peerStreams.perIP)+" delivery streams per address; retry later")
		return
	}
	defer release()
	stop := context.AfterFunc(r.Context(), end)
	defer stop()
	if err := rc.EnableFullDuplex(); err != nil {
		s.writeError(w, r, "send", http.StatusInternalServerError, "streaming is not supported by this connection", "")
		return
	}

	// Answers are written as lines are applied and flushed together: on
	// a keepalive, with a refusal, or answerDelay after the oldest one
	// (by the timer, so the writer is shared under mu).
	var (
		mu            sync.Mutex
		started       bool
		done          bool
		held          int
		out           []byte
		writeDeadline time.Time
	)
	// Any write may go to the connection (a full buffer flushes), so each
	// has a deadline, renewed lazily like the read deadline.
	renewWriteDeadline := func() {
		if now := time.Now(); writeDeadline.Sub(now) < s.opts.InternalReadTimeout*3/4 {
			writeDeadline = now.Add(s.opts.InternalReadTimeout)
			_ = rc.SetWriteDeadline(writeDeadline)
		}
	}
	flushLocked := func() bool {
		held = 0
		renewWriteDeadline()
		return rc.Flush() == nil
	}
	timer := time.AfterFunc(time.Hour, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done && held > 0 {
			flushLocked()
		}
	})
	timer.Stop()
	defer func() {
		mu.Lock()
		done = true
		timer.Stop()
		mu.Unlock()
	}()
	// answer writes line, if any, and flushes what is held when flush is
	// set; false when the sender is gone.
	answer := func(line []byte, flush bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if !started {
			started = true
			h := w.Header()
			h.Set("Content-Type", streamContentType)
			h.Set("X-Content-Type-Options", "nosniff")
			// The stream is the connection: it is not reused after.
			h.Set("Connection", "close")
			w.WriteHeader(http.StatusOK)
			held++ // the header goes out with the first flush
			flush = true
		}
		if len(line) > 0 {
			renewWriteDeadline()
			if _, err := w.Write(line); err != nil {
				return false
			}
			held++
		}
		switch {
		case flush:
			timer.Stop()
			if held > 0 {
				return flushLocked()
			}
		case held == 1:
			timer.Reset(time.Duration(s.answerDelay.Load()))
		}
		return true
	}
	refuse := func(status int, msg string) {
		s.noteBadRequest(r, "send", status, msg)
		b, _ := json.Marshal(streamError{Error: msg, Status: status})
		answer(append(b, '\n'), true)
	}

	br := bufio.NewReaderSize(r.Body, 16<<10)
	var origin string
	originKnown := false
	var readDeadline time.Time
	for {
		// Renewed lazily (a deadline per line costs a timer update): a
		// silent sender is cut after 3/4 to all of InternalReadTimeout.
		if now := time.Now(); readDeadline.Sub(now) < s.opts.InternalReadTimeout*3/4 {
			readDeadline = now.Add(s.opts.InternalReadTimeout)
			_ = rc.SetReadDeadline(readDeadline)
		}
		if ending.Load() {
			refuse(http.StatusServiceUnavailable, "server is shutting down")
			return
		}
		line, err := readLine(br, s.opts.MaxBodyBytes)
		switch {
		case err == nil:
		case ending.Load():
			refuse(http.StatusServiceUnavailable, "server is shutting down")
			return
		case errors.Is(err, errLineTooLong):
			refuse(http.StatusRequestEntityTooLarge, "line longer than "+strconv.FormatInt(s.opts.MaxBodyBytes, 10)+" bytes")
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			refuse(http.StatusRequestTimeout, "no line within the read timeout; send a keepalive line ({}) when idle")
			return
		default:
			// The sender ended the stream (EOF) or the connection broke.
			return
		}
		events, heldFrom, err := decodeStreamLine(line, s.opts.MaxBatchEvents)
		if err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, ErrTooManyEvents) {
				status = http.StatusRequestEntityTooLarge
			}
			refuse(status, err.Error())
			return
		}
		if events == nil {
			s.peerStreams.keepalives.Add(1)
			if !answer(nil, true) {
				return
			}
			continue
		}
		if !originKnown {
			origin, originKnown = events[0].Origin, true
		} else if events[0].Origin != origin {
			s.m.peerRefused.WithLabelValues("mixed_origins").Inc()
			refuse(http.StatusBadRequest, "all batches of one stream must have the same origin (a replica sends only its own events)")
			return
		}
		accepted, refusal := s.acceptPeerBatch(ip, events, heldFrom)
		if refusal != nil {
			refuse(refusal.status, refusal.msg)
			return
		}
		out = append(out[:0], `{"accepted":`...)
		out = strconv.AppendInt(out, int64(accepted), 10)
		out = append(out, "}\n"...)
		if !answer(out, false) {
			return
		}
	}
}

// decodeStreamLine parses one line of a delivery stream: its events and
// heldFrom, or no events for a keepalive.
func decodeStreamLine(line []byte, maxEvents int) ([]Event, uint64, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, 0, nil
	}
	var l streamLine
	if err := json.Unmarshal(line, &l); err != nil {
		return nil, 0, fmt.Errorf("%w: line: %s", ErrInvalidBody, jsonErrorText(err))
	}
	if l.Events == nil {
		return nil, 0, nil
	}
	events, err := decodeEvents(l.Events, maxEvents)
	if err != nil {
		return nil, 0, err
	}
	return events, l.HeldFrom, nil
}

// readLine reads one line of at most max bytes, its newline excluded. The
// line may alias br's buffer: it is valid until br is read again.
func readLine(br *bufio.Reader, max int64) ([]byte, error) {
	var long []byte
	for {
		frag, err := br.ReadSlice('\n')
		if int64(len(long)+len(frag)) > max+1 {
			return nil, errLineTooLong
		}
		switch {
		case err == nil:
			if long == nil {
				return frag[:len(frag)-1], nil
			}
			long = append(long, frag...)
			return long[:len(long)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, frag...)
		case errors.Is(err, io.EOF) && len(long)+len(frag) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// peerStream is one open delivery stream to a peer. send and keepalive are
// called from one goroutine; close may be called from any, more than once.
type peerStream interface {
	// send writes one batch line; with ask, a keepalive line after it
	// asks for the answers the peer holds.
	send(events []Event, heldFrom uint64, ask bool) error
	// keepalive writes a keepalive line, which also asks for the answers
	// the peer holds.
	keepalive() error
	// answers yields one answer per batch line, in order. The last one
	// before the channel closes carries the error that ended the stream.
	answers() <-chan streamAnswer
	close()
}

// streamAnswer is the peer's answer to one batch line, or, with err set,
// the end of the stream: a refusal (a permanentError for a 4xx other than
// 408 and 429) or a broken connection.
type streamAnswer struct {
	accepted int
	err      error
}

// statusError is a peer's refusal with an HTTP status: worth retrying
// (408, 429, 5xx), or a permanentError.
func statusError(status int, msg string) error {
	err := fmt.Errorf("peer answered %d %s: %s", status, http.StatusText(status), msg)
	if status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status/100 == 5 {
		return err
	}
	return permanentError{err}
}

// connStream is a peerStream over a connection of its own: the request
// is written by hand, each line one chunk in one write, so a line costs a
// system call and no hand-off to a transport goroutine.
type connStream struct {
	conn    net.Conn
	body    io.ReadCloser
	timeout time.Duration
	ans     chan streamAnswer
	done    chan struct{}
	line    []byte
	buf     []byte
	// writeDeadline is renewed lazily: a write may take between half and
	// all of timeout.
	writeDeadline time.Time
	closeOnce     sync.Once
}

// openStream opens a delivery stream to peer: it returns once the peer
// has answered the first line, within timeout. A peer that predates
// streaming gives errStreamUnsupported.
func (p *httpPeers) openStream(ctx context.Context, peer string, timeout time.Duration) (peerStream, error) {
	addr := net.JoinHostPort(peer, strconv.Itoa(p.port))
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := p.dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		if dctx.Err() != nil && ctx.Err() == nil {
			return nil, timeoutError{err}
		}
		return nil, err
	}
	// ctx ending or the timeout passing ends the opening.
	stop := context.AfterFunc(dctx, func() { _ = conn.SetDeadline(time.Now()) })
	fail := func(err error) (peerStream, error) {
		stop()
		_ = conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
			return nil, timeoutError{fmt.Errorf("peer did not answer the stream within %s: %w", timeout, err)}
		}
		return nil, err
	}
	head := make([]byte, 0, 512)
	head = append(head, "POST "+PeerEndpointURLPath+" HTTP/1.1\r\nHost: "+addr+
		"\r\nUser-Agent: sser\r\nContent-Type: "+streamContentType+
		"\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"...)
	if p.self != "" {
		head = append(head, PeerHeader+": "+p.self+"\r\n"...)
	}
	if p.token != "" {
		head = append(head, "Authorization: Bearer "+p.token+"\r\n"...)
	}
	head = appendChunk(append(head, "\r\n"...), keepaliveLine)
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(head); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	req := &http.Request{Method: http.MethodPost}
	var resp *http.Response
	for {
		if resp, err = http.ReadResponse(br, req); err != nil {
			return fail(err)
		}
		if resp.StatusCode != http.StatusContinue {
			break
		}
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != streamContentType {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := statusError(resp.StatusCode, string(bytes.TrimSpace(msg)))
		switch resp.StatusCode {
		case http.StatusUnsupportedMediaType, http.StatusBadRequest, http.StatusOK:
			// It took the request for one batch: it does not stream.
			err = fmt.Errorf("%w: %s answered with %q: %w", errStreamUnsupported, resp.Status, resp.Header.Get("Content-Type"), err)
		}
		return fail(err)
	}
	if !stop() {
		// ctx or the timeout ended as the answer came: the connection's
		// deadline is spoiled.
		err := ctx.Err()
		if err == nil {
			err = timeoutError{fmt.Errorf("peer answered the stream after %s", timeout)}
		}
		return fail(err)
	}
	_ = conn.SetDeadline(time.Time{})
	st := &connStream{conn: conn, body: resp.Body, timeout: timeout, ans: make(chan streamAnswer, 64), done: make(chan struct{})}
	go st.read()
	return st, nil
}

// appendChunk appends data as one chunk of a chunked body.
func appendChunk(b, data []byte) []byte {
	b = strconv.AppendInt(b, int64(len(data)), 16)
	b = append(b, "\r\n"...)
	b = append(b, data...)
	return append(b, "\r\n"...)
}

func (st *connStream) send(events []Event, heldFrom uint64, ask bool) error {
	evs, err := json.Marshal(events)
	if err != nil {
		return permanentError{err}
	}
	st.line = append(append(st.line[:0], `{"events":`...), evs...)
	if heldFrom > 0 {
		st.line = strconv.AppendUint(append(st.line, `,"heldFrom":`...), heldFrom, 10)
	}
	st.line = append(st.line, "}\n"...)
	st.buf = appendChunk(st.buf[:0], st.line)
	if ask {
		st.buf = appendChunk(st.buf, keepaliveLine)
	}
	err = st.write(st.buf)
	if cap(st.buf) > 1<<20 {
		st.buf, st.line = nil, nil
	}
	return err
}

func (st *connStream) keepalive() error {
	return st.write(appendChunk(st.buf[:0], keepaliveLine))
}

func (st *connStream) write(b []byte) error {
	if now := time.Now(); st.writeDeadline.Sub(now) < st.timeout/2 {
		st.writeDeadline = now.Add(st.timeout)
		_ = st.conn.SetWriteDeadline(st.writeDeadline)
	}
	_, err := st.conn.Write(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return timeoutError{fmt.Errorf("peer did not take a line within %s: %w", st.timeout, err)}
	}
	return err
}

func (st *connStream) answers() <-chan streamAnswer { return st.ans }

func (st *connStream) close() {
	st.closeOnce.Do(func() {
		close(st.done)
		_ = st.conn.Close()
	})
}

// read turns answer lines into answers until the stream ends.
func (st *connStream) read() {
	defer close(st.ans)
	br := bufio.NewReaderSize(st.body, 4096)
	give := func(a streamAnswer) bool {
		select {
		case st.ans <- a:
			return true
		case <-st.done:
			return false
		}
	}
	for {
		line, err := readLine(br, maxAnswerLine)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("peer ended the stream")
			}
			give(streamAnswer{err: fmt.Errorf("delivery stream: %w", err)})
			return
		}
		var a struct {
			Accepted *int   `json:"accepted"`
			Error    string `json:"error"`
			Status   int    `json:"status"`
		}
		if err := json.Unmarshal(line, &a); err != nil {
			give(streamAnswer{err: fmt.Errorf("delivery stream: malformed answer: %w", err)})
			return
		}
		switch {
		case a.Error != "" || a.Status != 0:
			give(streamAnswer{err: statusError(a.Status, a.Error)})
			return
		case a.Accepted == nil:
			continue // an answer to a keepalive
		}
		if !give(streamAnswer{accepted: *a.Accepted}) {
			return
		}
	}
}
