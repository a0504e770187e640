package wsclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Event is one message of a subscribed stream, or a notice.
type Event struct {
	// Stream is the stream the event was published to; empty for a notice.
	Stream string
	// Type is the publisher's event type (empty when it gave none), or
	// LostType for a notice of events that cannot be had, whose Data is
	// the notice as JSON ({"reason","origin","after","upTo","streams"}).
	Type string
	// ID is the position the client has once it has this event.
	ID   string
	Data string
}

// LostType is the Type of a loss notice, as SSE's sser-lost event.
const LostType = "sser-lost"

// Defaults of Options.
const (
	DefaultInitialDelay = time.Second
	DefaultMaxDelay     = 30 * time.Second
	DefaultJitter       = 0.5
	// DefaultReadTimeout is three of the server's default ping intervals.
	DefaultReadTimeout   = 45 * time.Second
	DefaultDialTimeout   = 10 * time.Second
	DefaultBufferSize    = 64
	DefaultMaxMessage    = 32 << 20
	DefaultResetInterval = time.Minute
)

// Options configure a Client. The zero value of a field is its default.
type Options struct {
	// Header is sent with every connection's handshake.
	Header http.Header
	// Token is a credential (a JWT or a ticket) sent as
	// Authorization: Bearer. TokenFunc, when set, is asked for one before
	// each connection instead (a ticket is short-lived: get a fresh one),
	// and a connection closed for an expired credential is then opened
	// again with a new one.
	Token     string
	TokenFunc func(ctx context.Context) (string, error)
	// LastEventID resumes from an id a previous subscription delivered.
	LastEventID string
	// InitialDelay, MaxDelay and Jitter shape the reconnection backoff:
	// InitialDelay doubled per failed attempt up to MaxDelay, less up to
	// Jitter of itself at random. A connection the server ended so the
	// client goes elsewhere (a drain) is reopened at once, within a
	// random part of InitialDelay.
	InitialDelay, MaxDelay time.Duration
	Jitter                 float64
	// ResetInterval is how long a connection must last for the backoff
	// to start again from InitialDelay.
	ResetInterval time.Duration
	// ReadTimeout restarts a connection on which nothing (not even the
	// server's ping) arrived for this long.
	ReadTimeout time.Duration
	// DialTimeout bounds connecting and the handshake.
	DialTimeout time.Duration
	// BufferSize is the capacity of the Events channel.
	BufferSize int
	// MaxMessage bounds one message from the server.
	MaxMessage int64
	// ErrorHandler is told of every connection that ended or failed, and
	// says whether to go on (reconnect); default Retryable.
	ErrorHandler func(err error) bool
	// OnConnect is called once each connection is subscribed, with how its
	// resume went ("exact", "lost", or "" when it did not resume).
	OnConnect func(resume string)
	// Logger logs reconnections at V(1).
	Logger logr.Logger
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.InitialDelay, DefaultInitialDelay)
	def(&o.MaxDelay, DefaultMaxDelay)
	def(&o.ReadTimeout, DefaultReadTimeout)
	def(&o.DialTimeout, DefaultDialTimeout)
	def(&o.ResetInterval, DefaultResetInterval)
	if o.Jitter <= 0 || o.Jitter > 1 {
		o.Jitter = DefaultJitter
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = DefaultMaxMessage
	}
	if o.ErrorHandler == nil {
		o.ErrorHandler = Retryable
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
}

// Client is one WebSocket subscription to sser that stays up until Close
// or its context ends. Its methods are safe for concurrent use.
type Client struct {
	url    *url.URL
	o      Options
	events chan Event
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}

	changeMu sync.Mutex // one Subscribe or Unsubscribe at a time
	wmu      sync.Mutex // writes to the connection

	mu      sync.Mutex
	streams []string
	lastID  string
	err     error
	conn    net.Conn
	pending *change
}

// change is a Subscribe or Unsubscribe sent, waiting for the server's word.
type change struct {
	set  []string
	done chan error
}

// Dial starts a Client subscribed to streams at rawURL (sser's events URL:
// ws://host:8000/events, or http://; wss:// or https:// for TLS). It
// returns at once; the connection is made in the background.
func Dial(ctx context.Context, rawURL string, streams []string, opts Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("sser/wsclient: %w", err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("sser/wsclient: URL scheme %q: want ws, wss, http or https", u.Scheme)
	}
	opts.setDefaults()
	ctx, cancel := context.WithCancel(ctx)
	c := &Client{url: u, o: opts, events: make(chan Event, opts.BufferSize), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), wake: make(chan struct{}, 1), streams: withStreams(nil, "subscribe", streams), lastID: opts.LastEventID}
	go c.run()
	return c, nil
}

// Events delivers the subscription's events in order. It is closed when
// the Client stops.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the Client has stopped.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the Client stopped (ErrClosed after Close), nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// LastEventID is the id of the last event delivered (or of the last
// subscription change): where a new Client would resume.
func (c *Client) LastEventID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastID
}

// Streams are the streams subscribed to (sorted).
func (c *Client) Streams() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.streams)
}

// Close stops the Client and waits until it has.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// Subscribe adds streams. On an open connection it returns once the server
// has confirmed the change (or refused it: a *CloseError, and the Client
// reconnects with the streams it had); otherwise the next connection
// subscribes them.
func (c *Client) Subscribe(ctx context.Context, streams ...string) error {
	return c.change(ctx, "subscribe", streams)
}

// Unsubscribe removes streams, as Subscribe adds them.
func (c *Client) Unsubscribe(ctx context.Context, streams ...string) error {
	return c.change(ctx, "unsubscribe", streams)
}

func (c *Client) change(ctx context.Context, typ string, streams []string) error {
	if len(streams) == 0 {
		return nil
	}
	c.changeMu.Lock()
	defer c.changeMu.Unlock()
	msg, err := json.Marshal(map[string]any{"type": typ, "streams": streams})
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	set := withStreams(c.streams, typ, streams)
	conn := c.conn
	if conn == nil {
		c.streams = set
		c.mu.Unlock()
		c.kick()
		return nil
	}
	ch := &change{set: set, done: make(chan error, 1)}
	c.pending = ch
	c.mu.Unlock()
	// A failed write ends the connection; the next one has the new set.
	_ = c.write(conn, ws.OpText, msg)
	select {
	case err := <-ch.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
}

func (c *Client) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Client) write(conn net.Conn, op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(c.o.DialTimeout))
	return wsutil.WriteClientMessage(conn, op, p)
}

func (c *Client) stop(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// run is the Client's one goroutine: connect, read, wait out the backoff.
func (c *Client) run() {
	defer close(c.done)
	defer close(c.events)
	defer c.cancel()
	log := c.o.Logger.WithValues("url", c.url.Redacted())
	attempt := 0
	for {
		if !c.waitStreams() {
			c.stop(ErrClosed)
			return
		}
		res := c.connect()
		if c.ctx.Err() != nil {
			c.stop(ErrClosed)
			return
		}
		if res.refused {
			// The server refused a change: the caller was told, and the
			// streams are those it had; resume them at once.
			attempt = 0
			continue
		}
		if !res.subscribedAt.IsZero() && time.Since(res.subscribedAt) >= c.o.ResetInterval {
			attempt = 0
		}
		err := res.err
		goOn := c.o.ErrorHandler(err)
		var ce *CloseError
		if errors.As(err, &ce) && ce.Code == CloseUnauthorized && c.o.TokenFunc != nil {
			goOn = true // a new credential may do
		}
		if !goOn {
			log.V(1).Info("stopped", "reason", err.Error())
			c.stop(err)
			return
		}
		var d time.Duration
		if errors.As(err, &ce) && (ce.Code == int(ws.StatusGoingAway) || ce.Code == CloseReplayPartial) {
			// Sent elsewhere (a drain, the maximum connection time) or
			// asked to resume for the rest: at once, spread a little.
			d = time.Duration(rand.Int64N(int64(c.o.InitialDelay)/4 + 1))
			attempt = 0
		} else {
			d = c.backoff(attempt, err)
			attempt++
		}
		log.V(1).Info("reconnecting", "delay", d, "attempt", attempt, "reason", err.Error())
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			c.stop(ErrClosed)
			return
		}
	}
}

// waitStreams waits until there are streams to subscribe to; false when
// the Client stops.
func (c *Client) waitStreams() bool {
	for {
		c.mu.Lock()
		n := len(c.streams)
		c.mu.Unlock()
		if n > 0 {
			return true
		}
		select {
		case <-c.wake:
		case <-c.ctx.Done():
			return false
		}
	}
}

// backoff is the wait before reconnection attempt attempt.
func (c *Client) backoff(attempt int, err error) time.Duration {
	d := c.o.InitialDelay
	for i := 0; i < attempt && d < c.o.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, c.o.MaxDelay)
	d -= time.Duration(float64(d) * c.o.Jitter * rand.Float64())
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > d {
		d = min(se.RetryAfter, c.o.MaxDelay)
	}
	return d
}

// connResult is how one connection went.
type connResult struct {
	subscribedAt time.Time // zero: never subscribed
	refused      bool      // the server refused a change and closed
	err          error     // never nil
}

// connect makes one connection and reads it until it ends.
func (c *Client) connect() (res connResult) {
	c.mu.Lock()
	streams, lastID := slices.Clone(c.streams), c.lastID
	c.mu.Unlock()
	u := *c.url
	q := u.Query()
	q.Del("stream")
	for _, s := range streams {
		q.Add("stream", s)
	}
	u.RawQuery = q.Encode()
	hdr := c.o.Header.Clone()
	if hdr == nil {
		hdr = http.Header{}
	}
	if lastID != "" {
		hdr.Set("Last-Event-ID", lastID)
	}
	token := c.o.Token
	if c.o.TokenFunc != nil {
		var err error
		if token, err = c.o.TokenFunc(c.ctx); err != nil {
			return connResult{err: fmt.Errorf("sser/wsclient: token: %w", err)}
		}
	}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	var refusal *StatusError
	d := ws.Dialer{
		Timeout: c.o.DialTimeout,
		Header:  ws.HandshakeHeaderHTTP(hdr),
		OnStatusError: func(status int, _ []byte, r io.Reader) {
			refusal = statusError(status, r)
		},
	}
	conn, br, _, err := d.Dial(c.ctx, u.String())
	if err != nil {
		if refusal != nil {
			return connResult{err: refusal}
		}
		return connResult{err: fmt.Errorf("sser/wsclient: connect: %w", err)}
	}
	stop := context.AfterFunc(c.ctx, func() { _ = conn.Close() })
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	defer func() {
		stop()
		_ = conn.Close()
		c.mu.Lock()
		c.conn = nil
		if p := c.pending; p != nil {
			c.pending = nil
			var ce *CloseError
			if errors.As(res.err, &ce) && (ce.Code == CloseBadMessage || ce.Code == CloseForbidden) {
				// This change was refused; the streams stay as they were.
				res.refused = true
				p.done <- res.err
			} else {
				// Perhaps applied, perhaps not: the next connection
				// subscribes the new set.
				c.streams = p.set
				p.done <- nil
			}
		}
		c.mu.Unlock()
	}()
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	return c.read(conn, r)
}

// serverMessage is any message sser sends.
type serverMessage struct {
	Type    string   `json:"type"`
	Stream  string   `json:"stream"`
	Event   string   `json:"event"`
	ID      string   `json:"id"`
	Data    string   `json:"data"`
	Streams []string `json:"streams"`
	Resume  string   `json:"resume"`
	Message string   `json:"message"`
}

// read reads the connection until it ends: events out, pings answered.
func (c *Client) read(conn net.Conn, r io.Reader) (res connResult) {
	var explained string // the error message before a close
	var text []byte
	for {
		_ = conn.SetReadDeadline(time.Now().Add(c.o.ReadTimeout))
		h, err := ws.ReadHeader(r)
		if err != nil {
			res.err = readError(err)
			return res
		}
		if h.Masked || h.Rsv != 0 {
			res.err = errors.New("sser/wsclient: protocol error: masked or extended frame from the server")
			return res
		}
		if int64(len(text))+h.Length > c.o.MaxMessage {
			res.err = fmt.Errorf("sser/wsclient: message over %d bytes", c.o.MaxMessage)
			return res
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			res.err = readError(err)
			return res
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = c.write(conn, ws.OpPong, p)
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			_ = c.write(conn, ws.OpClose, p)
			res.err = &CloseError{Code: int(code), Reason: reason, Message: explained}
			return res
		case ws.OpText, ws.OpContinuation:
			text = append(text, p...)
			if !h.Fin {
				continue
			}
		default:
			res.err = fmt.Errorf("sser/wsclient: unexpected frame %v", h.OpCode)
			return res
		}
		var m serverMessage
		if err := json.Unmarshal(text, &m); err != nil {
			res.err = fmt.Errorf("sser/wsclient: server sent %.64q: %w", text, err)
			return res
		}
		raw := text
		text = nil
		switch m.Type {
		case "event":
			if !c.deliver(Event{Stream: m.Stream, Type: m.Event, ID: m.ID, Data: m.Data}) {
				res.err = ErrClosed
				return res
			}
		case "lost":
			if !c.deliver(Event{Type: LostType, Data: string(raw)}) {
				res.err = ErrClosed
				return res
			}
		case "subscribed":
			c.mu.Lock()
			if m.ID != "" {
				c.lastID = m.ID
			}
			if p := c.pending; p != nil && slices.Equal(p.set, m.Streams) {
				c.streams, c.pending = p.set, nil
				p.done <- nil
			}
			c.mu.Unlock()
			if res.subscribedAt.IsZero() {
				res.subscribedAt = time.Now()
				if c.o.OnConnect != nil {
					c.o.OnConnect(m.Resume)
				}
			}
		case "error":
			explained = m.Message
		}
	}
}

// deliver hands ev to the consumer, then takes its id as the resume
// point; false when the Client stops first.
func (c *Client) deliver(ev Event) bool {
	select {
	case c.events <- ev:
	case <-c.ctx.Done():
		return false
	}
	if ev.ID != "" {
		c.mu.Lock()
		c.lastID = ev.ID
		c.mu.Unlock()
	}
	return true
}

func readError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrReadTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrConnectionLost
	}
	return fmt.Errorf("sser/wsclient: read: %w", err)
}

// statusError reads a refused handshake's answer.
func statusError(status int, r io.Reader) *StatusError {
	se := &StatusError{Code: status}
	resp, err := http.ReadResponse(bufio.NewReader(r), nil)
	if err != nil {
		return se
	}
	defer resp.Body.Close()
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		se.RetryAfter = time.Duration(s) * time.Second
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e struct{ Error string }
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		se.Message = e.Error
	} else {
		se.Message = strings.TrimSpace(string(bytes.ToValidUTF8(body, nil)))
	}
	return se
}

// withStreams is set with names added (subscribe) or removed: sorted, no
// repeats.
func withStreams(set []string, typ string, names []string) []string {
	out := slices.Clone(set)
	if typ == "subscribe" {
		out = append(out, names...)
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.DeleteFunc(out, func(s string) bool { return slices.Contains(names, s) })
}
