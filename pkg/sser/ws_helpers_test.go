package sser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// wsMsg is any message the server sends, decoded.
type wsMsg struct {
	Type        string   `json:"type"`
	Stream      string   `json:"stream"`
	Event       string   `json:"event"`
	ID          string   `json:"id"`
	Data        string   `json:"data"`
	Streams     []string `json:"streams"`
	Resume      string   `json:"resume"`
	Reason      string   `json:"reason"`
	LastEventID string   `json:"lastEventId"`
	Code        int      `json:"code"`
	Message     string   `json:"message"`
}

// wsSub is a raw WebSocket client for tests: a reader goroutine decodes
// every message onto msgs and records the close; pings are answered unless
// noPong is set.
type wsSub struct {
	conn   net.Conn
	msgs   chan wsMsg
	noPong atomic.Bool
	pings  atomic.Int64
	gate   chan struct{}

	wmu sync.Mutex

	done        chan struct{}
	closeCode   ws.StatusCode // 0: the connection ended with no close frame
	closeReason string
	readErr     error
}

// wsURL is the server's frontend as a ws:// URL with query.
func (ts *testServer) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(ts.front.URL, "http") + "/events?" + query
}

// dialWS opens a WebSocket; a refused handshake is a *wsRefusal.
func dialWS(ctx context.Context, u string, hdr http.Header) (*wsSub, error) {
	return dialWSGated(ctx, u, hdr, nil)
}

// dialWSGated opens a WebSocket whose client reads nothing until gate is
// closed (nil: at once).
func dialWSGated(ctx context.Context, u string, hdr http.Header, gate chan struct{}) (*wsSub, error) {
	var refusal *wsRefusal
	d := ws.Dialer{
		Timeout: 5 * time.Second,
		OnStatusError: func(status int, _ []byte, r io.Reader) {
			refusal = &wsRefusal{status: status}
			if resp, err := http.ReadResponse(bufio.NewReader(r), nil); err == nil {
				refusal.header = resp.Header
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				refusal.body = string(b)
			}
		},
	}
	if hdr != nil {
		d.Header = ws.HandshakeHeaderHTTP(hdr)
	}
	conn, br, _, err := d.Dial(ctx, u)
	if err != nil {
		if refusal != nil {
			return nil, refusal
		}
		return nil, err
	}
	c := &wsSub{conn: conn, msgs: make(chan wsMsg, 4096), done: make(chan struct{}), gate: gate}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	go c.read(r)
	return c, nil
}

type wsRefusal struct {
	status int
	header http.Header
	body   string
}

func (r *wsRefusal) Error() string { return fmt.Sprintf("handshake answered %d: %s", r.status, r.body) }

func mustDialWS(t *testing.T, u string, hdr http.Header) *wsSub {
	t.Helper()
	c, err := dialWS(t.Context(), u, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

func (c *wsSub) read(r io.Reader) {
	defer close(c.done)
	defer close(c.msgs)
	if c.gate != nil {
		<-c.gate
	}
	var text []byte
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			c.readErr = err
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			c.readErr = err
			return
		}
		if h.Masked {
			c.readErr = errors.New("server sent a masked frame")
			return
		}
		switch h.OpCode {
		case ws.OpPing:
			c.pings.Add(1)
			if !c.noPong.Load() {
				c.write(ws.OpPong, p)
			}
		case ws.OpClose:
			c.closeCode, c.closeReason = ws.ParseCloseFrameData(p)
			c.write(ws.OpClose, p)
			return
		case ws.OpText, ws.OpContinuation:
			text = append(text, p...)
			if !h.Fin {
				continue
			}
			var m wsMsg
			if err := json.Unmarshal(text, &m); err != nil {
				c.readErr = fmt.Errorf("server sent %q: %w", text, err)
				return
			}
			text = nil
			c.msgs <- m
		default:
			c.readErr = fmt.Errorf("server sent opcode %v", h.OpCode)
			return
		}
	}
}

// write sends one masked frame.
func (c *wsSub) write(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var b bytes.Buffer
	f := ws.MaskFrameInPlace(ws.NewFrame(op, true, bytes.Clone(p)))
	if err := ws.WriteFrame(&b, f); err != nil {
		return err
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(b.Bytes())
	return err
}

func (c *wsSub) send(t *testing.T, text string) {
	t.Helper()
	if err := c.write(ws.OpText, []byte(text)); err != nil {
		t.Fatalf("send %s: %v", text, err)
	}
}

func (c *wsSub) close() { _ = c.conn.Close() }

// next is the next message, failing after timeout or when the connection
// ended.
func (c *wsSub) next(t *testing.T, timeout time.Duration) wsMsg {
	t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			t.Fatalf("connection ended (close %d %q, read error %v) waiting for a message", c.closeCode, c.closeReason, c.readErr)
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %s", timeout)
	}
	return wsMsg{}
}

// nextOf skips messages until one of type typ.
func (c *wsSub) nextOf(t *testing.T, typ string, timeout time.Duration) wsMsg {
	t.Helper()
	end := time.Now().Add(timeout)
	for {
		m := c.next(t, time.Until(end))
		if m.Type == typ {
			return m
		}
	}
}

// events collects n event messages (others are skipped).
func (c *wsSub) events(t *testing.T, n int, timeout time.Duration) []wsMsg {
	t.Helper()
	var out []wsMsg
	end := time.Now().Add(timeout)
	for len(out) < n {
		if m := c.next(t, time.Until(end)); m.Type == "event" {
			out = append(out, m)
		}
	}
	return out
}

// waitClose drains messages until the connection ends and returns them
// with the close frame's code (0: none) and reason.
func (c *wsSub) waitClose(t *testing.T, timeout time.Duration) ([]wsMsg, ws.StatusCode, string) {
	t.Helper()
	var got []wsMsg
	end := time.After(timeout)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				<-c.done
				return got, c.closeCode, c.closeReason
			}
			got = append(got, m)
		case <-end:
			t.Fatalf("connection still open after %s (messages %+v)", timeout, got)
		}
	}
}

func wsData(msgs []wsMsg) string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Data)
	}
	return strings.Join(out, ",")
}
