package sseclient

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Options changes what a Client records.
type Options struct {
	// Track, when > 0, makes the client count each measured event by its
	// sequence number (1..Track), so that missing and duplicate events can
	// be found afterwards whatever order they came in (events published on
	// different replicas may interleave). Sequence numbers above Track are
	// counted in Beyond.
	Track int
	// LastEventID, when set, is sent as the Last-Event-ID header: the
	// subscription resumes from there. DialAll sends LastEventIDs[i] for
	// client i instead, when that is set.
	LastEventID  string
	LastEventIDs []string
	// WebSocket subscribes with a WebSocket on the same URL (sser's
	// JSON messages) instead of SSE.
	WebSocket bool
	// Gzip asks for a gzip response (Accept-Encoding: gzip) and inflates
	// it as it reads.
	Gzip bool
}

// Client is one SSE subscriber: a raw TCP connection, one hand-written
// request, net/http's response parser (for the chunked body) and a bufio
// line reader. The same code reads every server. It holds one goroutine
// and no timers, so the driver's own cost per connection stays small.
//
// Every event's data must start with "<seq> <unix-nanos> ". Seq 0 is a
// warm-up: it only sets Ready. Events with an explicit event type (such as
// sser's sser-lost) are counted in Typed and otherwise ignored.
type Client struct {
	conn net.Conn

	Ready    atomic.Bool  // a warm-up event (seq 0) arrived
	Got      atomic.Int64 // measured events (seq > 0) received, repeats included
	Done     atomic.Bool  // the connection ended
	LastRecv atomic.Int64 // unix nanos of the latest measured event
	// WireBytes counts the body bytes read off the connection (chunk
	// framing excluded; gzip bytes when the response is compressed).
	WireBytes atomic.Int64

	// Owned by the reading goroutine until it has returned (wait for the
	// WaitGroup given to Dial before reading them).
	Hist       Histogram
	OutOfOrder int64 // measured events whose seq was not above the previous one
	Typed      int64 // data lines of events with an event type
	Beyond     int64 // measured events with seq above Options.Track
	// FrameBytes and IDBytes are the bytes of the measured events' frames
	// (every line, the blank one included) and of their id values.
	FrameBytes int64
	IDBytes    int64
	Err        error

	lastSeq int64
	seen    []uint8 // seen[seq] counts arrivals of seq, saturating at 255
	lastID  []byte
}

// Dial opens the subscription and returns once the request is written; the
// response is read by the client's goroutine, which runs until the
// connection closes. wg is done when that goroutine has returned.
func Dial(ctx context.Context, target *url.URL, wg *sync.WaitGroup, opts Options) (*Client, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", target.Host)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		// Close with a reset: no TIME_WAIT, so thousands of connections per
		// round do not use up the loopback's ephemeral ports.
		_ = tc.SetLinger(0)
	}
	req := "GET " + target.RequestURI() + " HTTP/1.1\r\nHost: " + target.Host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
	if opts.WebSocket {
		req += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + wsKey + "\r\n"
	}
	if opts.LastEventID != "" {
		req += "Last-Event-ID: " + opts.LastEventID + "\r\n"
	}
	if opts.Gzip {
		req += "Accept-Encoding: gzip\r\n"
	}
	req += "\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		_ = conn.Close()
		return nil, err
	}
	c := &Client{conn: conn}
	if opts.Track > 0 {
		c.seen = make([]uint8, opts.Track+1)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer c.Done.Store(true)
		if opts.WebSocket {
			c.Err = c.readWS(target)
			return
		}
		c.Err = c.read(target)
	}()
	return c, nil
}

var (
	dataPrefix  = []byte("data: ")
	eventPrefix = []byte("event:")
	idPrefix    = []byte("id: ")
)

func (c *Client) read(target *url.URL) error {
	br := bufio.NewReaderSize(c.conn, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet, URL: target})
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	var body io.Reader = countingReader{resp.Body, &c.WireBytes}
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			return fmt.Errorf("gzip response: %w", err)
		}
		body = zr
	}
	lines := bufio.NewReaderSize(body, 4096)
	typed := false // the event being read has an event: line
	// Bytes of the frame being read, of its id, and whether it is measured.
	frame, id, measured := 0, 0, false
	for {
		line, err := lines.ReadSlice('\n')
		if err != nil {
			return err
		}
		frame += len(line)
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			typed = false // end of an event
			if measured {
				c.FrameBytes += int64(frame)
				c.IDBytes += int64(id)
			}
			frame, id, measured = 0, 0, false
			continue
		}
		if v, ok := bytes.CutPrefix(line, idPrefix); ok {
			v = bytes.TrimRight(v, "\r\n")
			id = len(v)
			c.lastID = append(c.lastID[:0], v...)
			continue
		}
		if bytes.HasPrefix(line, eventPrefix) {
			typed = true
			continue
		}
		rest, ok := bytes.CutPrefix(line, dataPrefix)
		if !ok {
			continue
		}
		if typed {
			c.Typed++
			continue
		}
		m, err := c.record(rest)
		if err != nil {
			return fmt.Errorf("malformed data line %q", line)
		}
		measured = measured || m
	}
}

// record counts an event whose data starts "<seq> <unix-nanos> ": false
// for a warm-up (seq 0).
func (c *Client) record(data []byte) (bool, error) {
	now := time.Now()
	seq, rest, ok1 := CutInt(data)
	ts, _, ok2 := CutInt(rest)
	if !ok1 || !ok2 {
		return false, errors.New("malformed data")
	}
	if seq == 0 {
		c.Ready.Store(true)
		return false, nil
	}
	if seq <= c.lastSeq {
		c.OutOfOrder++
	}
	c.lastSeq = seq
	if c.seen != nil {
		if seq < int64(len(c.seen)) {
			if c.seen[seq] < 255 {
				c.seen[seq]++
			}
		} else {
			c.Beyond++
		}
	}
	c.Hist.Record(now.Sub(time.Unix(0, ts)))
	c.LastRecv.Store(now.UnixNano())
	c.Got.Add(1)
	return true, nil
}

// LastID is the last event id the client saw ("" when none). Read it
// after the client's goroutine has returned.
func (c *Client) LastID() string { return string(c.lastID) }

// Seen is how many times the event seq arrived (0 when not tracked). Read
// it after the client's goroutine has returned.
func (c *Client) Seen(seq int) int {
	if seq < 0 || seq >= len(c.seen) {
		return 0
	}
	return int(c.seen[seq])
}

// CutInt parses the decimal number at the start of b, up to a space.
func CutInt(b []byte) (int64, []byte, bool) {
	var n int64
	for i, ch := range b {
		switch {
		case ch >= '0' && ch <= '9' && i < 19:
			n = n*10 + int64(ch-'0')
		case ch == ' ' && i > 0:
			return n, b[i+1:], true
		default:
			return 0, b, false
		}
	}
	return 0, b, false
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Close closes the connection; the reading goroutine then returns.
func (c *Client) Close() { _ = c.conn.Close() }

// CloseAll closes every client opened so far (nil ones are skipped) and
// waits for their reading goroutines, which wg counts.
func CloseAll(clients []*Client, wg *sync.WaitGroup) {
	for _, c := range clients {
		if c != nil {
			c.Close()
		}
	}
	wg.Wait()
}

// DialAll opens len(clients) subscriptions, dialers at a time; client i
// subscribes to targets[i % len(targets)].
func DialAll(ctx context.Context, targets []*url.URL, clients []*Client, dialers int, wg *sync.WaitGroup, opts Options) error {
	var (
		next    atomic.Int64
		dwg     sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range min(dialers, len(clients)) {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(clients) || ctx.Err() != nil {
					return
				}
				o := opts
				if opts.LastEventIDs != nil {
					o.LastEventID = opts.LastEventIDs[i]
				}
				c, err := Dial(ctx, targets[i%len(targets)], wg, o)
				if err != nil {
					errOnce.Do(func() { first = fmt.Errorf("subscriber %d: %w", i, err) })
					return
				}
				clients[i] = c
			}
		}()
	}
	dwg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// PollUntil checks cond every few milliseconds until it holds, for at most d.
func PollUntil(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// AllReady says whether every client has received a warm-up event.
func AllReady(clients []*Client) bool { return CountReady(clients) == len(clients) }

// CountReady counts the clients that have received a warm-up event.
func CountReady(clients []*Client) int {
	n := 0
	for _, c := range clients {
		if c != nil && c.Ready.Load() {
			n++
		}
	}
	return n
}

// CountDone counts the clients whose connection has ended.
func CountDone(clients []*Client) int {
	n := 0
	for _, c := range clients {
		if c != nil && c.Done.Load() {
			n++
		}
	}
	return n
}

// FirstErr is the error of the first ended client that has one.
func FirstErr(clients []*Client) error {
	for _, c := range clients {
		if c != nil && c.Done.Load() && c.Err != nil {
			return c.Err
		}
	}
	return nil
}
