package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// client is one SSE subscriber: a raw TCP connection, one hand-written
// request, net/http's response parser (for the chunked body) and a bufio
// line reader. The same code reads every engine. It holds one goroutine
// and no timers, so the driver's own cost per connection stays small.
type client struct {
	conn net.Conn

	ready    atomic.Bool  // a warm-up event (seq 0) arrived
	got      atomic.Int64 // measured events (seq > 0) received
	done     atomic.Bool  // the connection ended
	lastRecv atomic.Int64 // unix nanos of the latest measured event

	// Owned by the reading goroutine until done is set.
	hist       histogram
	lastSeq    int64
	outOfOrder int64
	err        error
}

// dial opens the subscription and returns once the request is written; the
// response is read by the client's goroutine, which runs until the
// connection closes.
func dial(ctx context.Context, target *url.URL, wg *sync.WaitGroup) (*client, error) {
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
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		_ = conn.Close()
		return nil, err
	}
	c := &client{conn: conn}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer c.done.Store(true)
		c.err = c.read(target)
	}()
	return c, nil
}

var dataPrefix = []byte("data: ")

func (c *client) read(target *url.URL) error {
	br := bufio.NewReaderSize(c.conn, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet, URL: target})
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	lines := bufio.NewReaderSize(resp.Body, 4096)
	for {
		line, err := lines.ReadSlice('\n')
		if err != nil {
			return err
		}
		rest, ok := bytes.CutPrefix(line, dataPrefix)
		if !ok {
			continue
		}
		now := time.Now()
		seq, rest, ok1 := cutInt(rest)
		ts, _, ok2 := cutInt(rest)
		if !ok1 || !ok2 {
			return fmt.Errorf("malformed data line %q", line)
		}
		if seq == 0 {
			c.ready.Store(true)
			continue
		}
		if seq <= c.lastSeq {
			c.outOfOrder++
		}
		c.lastSeq = seq
		c.hist.record(now.Sub(time.Unix(0, ts)))
		c.lastRecv.Store(now.UnixNano())
		c.got.Add(1)
	}
}

// cutInt parses the decimal number at the start of b, up to a space.
func cutInt(b []byte) (int64, []byte, bool) {
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

func (c *client) close() { _ = c.conn.Close() }
